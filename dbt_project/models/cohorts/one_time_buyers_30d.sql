-- Second-purchase nudge: exactly one order in the last 30 days and not already a repeat buyer
-- (not in repeat_buyers_90d).
-- entered_at: that order.
{{ cohort(all_of=[
    performed('purchase', measure=distinct('order_id'), operator='=', value=1, within=last(30, 'days')),
    not_in_cohort('repeat_buyers_90d'),
]) }}
