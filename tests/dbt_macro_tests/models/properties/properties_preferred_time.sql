-- preferred_hour / preferred_day_of_week: the hour / ISO day with the most units (events, orders,
-- sessions), in UTC or in each user's own zone (cohortflow_resolve_time_zones over the seeds: their
-- time_zone, else their country's, else UTC), with windows and filters.
{{ computed_properties([
    preferred_hour('hour_by_events_utc', 'purchase'),
    preferred_hour('hour_by_orders_utc', 'purchase', unit='orders'),
    preferred_hour('hour_by_orders_local', 'purchase', unit='orders', time_zone='user'),
    preferred_day_of_week('day_by_events_utc', 'purchase'),
    preferred_day_of_week('day_by_orders_local', 'purchase', unit='orders', time_zone='user'),
    preferred_hour('hour_by_sessions_utc', '*', unit='sessions'),
    preferred_hour('hour_any_event_utc', '*'),
    preferred_day_of_week('day_by_sessions_local', '*', unit='sessions', time_zone='user'),
    preferred_hour('view_hour_7d', 'view_item', within=last(7, 'days'), where=[where('price', '>=', 50)]),
], events=ref('property_events'), users=ref('property_users'),
   time_zones='(' ~ cohortflow_resolve_time_zones(ref('property_user_attributes'), ref('property_country_time_zones')) ~ ')') }}
