-- event_at, the time of the event, as a property: min / max / first / last give a timestamp, a where()
-- compares it, and the distinct kinds read it as 'YYYY-MM-DD HH:MM:SS' text.
{{ computed_properties([
    aggregate('first_purchase_at', 'min', 'event_at', event='purchase'),
    aggregate('last_purchase_at', 'max', 'event_at', event='purchase'),
    first_value('first_view_at', 'event_at', event='view_item'),
    last_value('last_view_at', 'event_at', event='view_item', within=last(1, 'days')),
    last_value('last_view_before_today', 'event_at', event='view_item', where=[where('event_at', '<', '2024-03-10')]),
    unique_count('purchase_moments', 'event_at', event='purchase'),
    unique_list('session_moments', 'event_at', event='session_start'),
], events=ref('property_events'), users=ref('property_users')) }}
