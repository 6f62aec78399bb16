-- The computed properties marketers asked for, one line each (docs/properties.md). One grouped scan of
-- int_events_as_of for the counts and aggregates, one small ranked query per value / list property.
-- marts.user_properties selects every column of this model's contract: to add a property, add a line
-- here and its column (name, data_type, description) to the YAML, and work its value out by hand in
-- tests/fixtures/hand_events/expected.yml.
-- The right time to reach a buyer (the last three): the hour they order most in, in their own time zone
-- (int_user_time_zones: for copy such as "usually buys between 19:00 and 21:00") and in UTC (what a
-- scheduler runs on), and the day of the week in their own zone.
{{ computed_properties([
    event_count('view_count_7d', 'view_item', within=last(7, 'days')),
    event_count('high_value_view_count_30d', 'view_item', within=last(30, 'days'), where=[where('price', '>=', 50)]),
    aggregate('items_purchased_90d', 'sum', 'quantity', event='purchase', within=last(90, 'days')),
    aggregate('max_price_viewed_30d', 'max', 'price', event='view_item', within=last(30, 'days')),
    first_value('first_purchased_category', 'category', event='purchase'),
    last_value('last_viewed_item_id', 'item_id', event='view_item'),
    most_frequent('most_viewed_category_30d', 'category', event='view_item', within=last(30, 'days')),
    unique_list('categories_purchased', 'category', event='purchase'),
    unique_list('platforms_used', 'platform', event='session_start'),
    unique_count('distinct_items_viewed_30d', 'item_id', event='view_item', within=last(30, 'days')),
    first_time('first_purchase_at', 'purchase'),
    last_time('last_purchase_at', 'purchase'),
    days_since('days_since_last_purchase', 'purchase'),
    preferred_hour('preferred_purchase_hour_local', 'purchase', unit='orders', time_zone='user'),
    preferred_hour('preferred_purchase_hour_utc', 'purchase', unit='orders', time_zone='utc'),
    preferred_day_of_week('preferred_purchase_day_of_week', 'purchase', unit='orders', time_zone='user'),
]) }}
