-- Sums, averages and comparisons of money and JSON numbers are exact decimals (6 places).
{{ computed_properties([
    aggregate('revenue_sum', 'sum', 'revenue', event='purchase'),
    aggregate('discount_sum', 'sum', 'discount', event='purchase'),
    aggregate('price_avg', 'avg', 'price', event='purchase'),
    aggregate('price_max', 'max', 'price', event='purchase'),
    event_count('revenue_at_least_0_3', 'purchase', where=where('revenue', '>=', 0.3)),
    event_count('discount_at_most_0_3', 'purchase', where=where('discount', '<=', 0.3)),
    last_value('last_price', 'price', event='purchase'),
], events=ref('property_events'), users=ref('property_users')) }}
