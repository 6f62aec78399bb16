-- One event_count per predicate operator (on JSON properties and typed columns), event lists and '*'.
{{ computed_properties([
    event_count('eq_json', 'purchase', where=where('coupon', '=', 'SPRING')),
    event_count('ne_json', 'purchase', where=where('coupon', '!=', 'SPRING')),
    event_count('gt_price', 'purchase', where=where('price', '>', 20)),
    event_count('ge_price', 'purchase', where=where('price', '>=', 20)),
    event_count('lt_json_number', 'purchase', where=where('discount', '<', 5)),
    event_count('le_json_number', 'purchase', where=where('discount', '<=', 5)),
    event_count('in_category', 'purchase', where=where('category', 'in', ['books', 'toys'])),
    event_count('not_in_category', 'purchase', where=where('category', 'not_in', ['books', 'toys'])),
    event_count('contains_name', 'purchase', where=where('name', 'contains', 'Shirt')),
    event_count('without_coupon', 'purchase', where=where('coupon', 'is_null')),
    event_count('with_coupon', 'purchase', where=where('coupon', 'is_not_null')),
    event_count('both_predicates', 'purchase', where=[where('category', '=', 'books'), where('price', '>=', 20)]),
    event_count('views_or_carts', ['view_item', 'add_to_cart']),
    event_count('any_event', '*'),
], events=ref('property_events'), users=ref('property_users')) }}
