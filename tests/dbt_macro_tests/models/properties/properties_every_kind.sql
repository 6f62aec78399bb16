-- Every property kind once, over the seed events (ever window): compared with a hand-worked seed by
-- tests/properties/assert_properties_every_kind_matches_expected.sql. u_ben's 12:00:01 purchase is
-- after as_of (12:00:00) and must not count anywhere.
{{ computed_properties([
    event_count('view_count', 'view_item'),
    aggregate('items_bought', 'sum', 'quantity', event='purchase'),
    aggregate('max_price_viewed', 'max', 'price', event='view_item'),
    aggregate('average_price_paid', 'avg', 'price', event='purchase'),
    first_value('first_category_bought', 'category', event='purchase'),
    last_value('last_item_viewed', 'item_id', event='view_item'),
    most_frequent('most_viewed_category', 'category', event='view_item'),
    unique_list('platforms', 'platform', event='session_start'),
    unique_count('distinct_categories_bought', 'category', event='purchase'),
], events=ref('property_events'), users=ref('property_users')) }}
