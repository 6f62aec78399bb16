-- VIPs going quiet: big spenders (big_spenders_90d) with no event at all in the last 7 days.
-- entered_at: when they became a big spender.
{{ cohort(all_of=[
    in_cohort('big_spenders_90d'),
    negate(had_been_active(within=last(7, 'days'))),
]) }}
