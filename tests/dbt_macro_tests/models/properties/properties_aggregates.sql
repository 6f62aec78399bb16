-- sum / min / max / avg of a JSON and a typed property, unique_count, and what users without values get.
{{ computed_properties([
    aggregate('discount_sum', 'sum', 'discount', event='purchase'),
    aggregate('discount_min', 'min', 'discount', event='purchase'),
    aggregate('discount_max', 'max', 'discount', event='purchase'),
    aggregate('discount_avg', 'avg', 'discount', event='purchase'),
    aggregate('price_avg', 'avg', 'price', event='purchase'),
    unique_count('coupons_used', 'coupon', event='purchase'),
    unique_count('categories_bought', 'category', event='purchase'),
    event_count('purchases', 'purchase'),
], events=ref('property_events'), users=ref('property_users')) }}
