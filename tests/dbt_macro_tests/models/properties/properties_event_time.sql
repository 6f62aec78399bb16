-- Properties on the event time itself: first_time / last_time (the time of the first / last matching
-- event) and days_since (whole 24-hour periods from the last matching event to as_of), with windows
-- and filters; purchases_last_day shows that days_since < N agrees with last(N, 'days').
{{ computed_properties([
    first_time('first_purchase_at', 'purchase'),
    last_time('last_purchase_at', 'purchase'),
    last_time('last_big_purchase_at', 'purchase', where=[where('price', '>=', 50)]),
    first_time('first_view_this_week', 'view_item', within=last(7, 'days')),
    days_since('days_since_purchase', 'purchase'),
    days_since('days_since_view_7d', 'view_item', within=last(7, 'days')),
    days_since('days_since_any_event', '*'),
    event_count('purchases_last_day', 'purchase', within=last(1, 'days')),
], events=ref('property_events'), users=ref('property_users')) }}
