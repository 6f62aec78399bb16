-- The computed properties marketers asked for, one line each (docs/properties.md). One grouped scan of
-- int_events_as_of for the counts and aggregates, one small ranked query per value / list property.
-- marts.user_properties selects every column of this model's contract: to add a property, add a line
-- here and its column (name, data_type, description) to the YAML, and work its value out by hand in
-- tests/fixtures/hand_events/expected.yml.
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
]) }}
