-- One event_count per window kind, so the unit tests can put events on every boundary.
{{ computed_properties([
    event_count('last_30_minutes', '*', within=last(30, 'minutes')),
    event_count('last_2_hours', '*', within=last(2, 'hours')),
    event_count('last_1_day', '*', within=last(1, 'day')),
    event_count('last_1_week', '*', within=last(1, 'week')),
    event_count('since_march_9', '*', within=since('2024-03-09')),
    event_count('between_march_1_and_9', '*', within=between('2024-03-01', '2024-03-09')),
    event_count('within_first_day', '*', within=within_first(1, 'day')),
    event_count('ever', '*'),
], events=ref('property_events'), users=ref('property_users')) }}
