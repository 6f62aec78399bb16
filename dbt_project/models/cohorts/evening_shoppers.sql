-- Evening shoppers (seed 001's "usually buys between 19:00 and 21:00"): buyers whose preferred hour of
-- day (UTC, marts.user_properties.preferred_hour_of_day) is 19, 20 or 21, for evening send times.
-- entered_at: the later of their first purchase and their last event (when the preferred hour last could change).
{{ cohort(all_of=[
    computed_property('preferred_hour_of_day', 'in', [19, 20, 21]),
    performed('purchase'),
]) }}
