-- first / last value, most frequent and unique list: ties, NULLs, windows and number formatting.
{{ computed_properties([
    first_value('first_item', 'item_id', event='view_item'),
    last_value('last_item', 'item_id', event='view_item'),
    first_value('first_price_paid', 'price', event='purchase'),
    last_value('last_price_paid', 'price', event='purchase'),
    last_value('last_coupon', 'coupon', event='purchase'),
    most_frequent('top_category', 'category', event='view_item'),
    most_frequent('top_category_last_day', 'category', event='view_item', within=last(1, 'day')),
    unique_list('items_viewed', 'item_id', event='view_item'),
    unique_list('coupons', 'coupon', event='purchase'),
], events=ref('property_events'), users=ref('property_users')) }}
