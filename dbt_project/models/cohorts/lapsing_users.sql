-- Lapsing: active 30 to 60 days ago but not in the last 30 days, the win-back audience.
-- "Active in the last 60 days and not in the last 30" is "active in (as_of - 60 d, as_of - 30 d] only".
-- entered_at: their first event of the 60-day window.
{{ cohort(all_of=[
    had_been_active(within=last(60, 'days')),
    negate(had_been_active(within=last(30, 'days'))),
]) }}
