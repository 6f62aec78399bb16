-- Habitual users: active (any event) on at least 3 distinct UTC days in the last 7 days.
-- entered_at: their first event on the third active day of the window.
{{ cohort(all_of=[
    had_been_active(within=last(7, 'days'), measure=on_distinct_days(), operator='>=', value=3),
]) }}
