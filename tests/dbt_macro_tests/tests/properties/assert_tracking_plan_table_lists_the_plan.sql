-- Intent: the tracking_plan model renders its YAML (meta.tracking_plan) as one row per event type
-- (property NULL) and one per property, with the type as text; rows in one relation and not the other
-- are returned (hand-written expectation: models/properties/tracking_plan.yml).
with expected as (
    {%- set rows = [
        ('session_start', none, none, 'A visit begins.'),
        ('session_start', 'platform', 'string', 'ios, android or web.'),
        ('view_item', none, none, 'Item page viewed.'),
        ('view_item', 'item_id', 'string', none),
        ('view_item', 'category', 'string', none),
        ('view_item', 'price', 'number', none),
        ('add_to_cart', none, none, 'Item added to the cart.'),
        ('add_to_cart', 'item_id', 'string', none),
        ('add_to_cart', 'category', 'string', none),
        ('add_to_cart', 'price', 'number', none),
        ('add_to_cart', 'quantity', 'integer', none),
        ('purchase', none, none, 'One purchased line.'),
        ('purchase', 'item_id', 'string', none),
        ('purchase', 'category', 'string', none),
        ('purchase', 'price', 'number', none),
        ('purchase', 'quantity', 'integer', none),
        ('purchase', 'revenue', 'number', none),
        ('purchase', 'order_id', 'string', none),
        ('purchase', 'coupon', 'string', 'The coupon code used, if any.'),
        ('purchase', 'discount', 'number | string', 'Amount off; some seeds send it as text.'),
        ('purchase', 'name', 'string', none),
        ('cancel_purchase', none, none, 'A cancelled line.'),
        ('cancel_purchase', 'item_id', 'string', none),
        ('cancel_purchase', 'quantity', 'integer', none),
        ('cancel_purchase', 'revenue', 'number', none),
        ('start_subscription', none, none, 'Subscription started.'),
        ('start_subscription', 'plan', 'string', none),
        ('start_subscription', 'price', 'number', none),
        ('cancel_subscription', none, none, 'Subscription ended.'),
        ('cancel_subscription', 'plan', 'string', none),
    ] -%}
    {%- for row in rows %}
    select
        {%- for value in row %}
        cast({{ "null" if value is none else "'" ~ value ~ "'" }} as varchar) as {{ ['event_type', 'property', 'data_type', 'description'][loop.index0] }}{{ ',' if not loop.last }}
        {%- endfor %}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

actual as (
    select event_type, property, data_type, description from {{ ref('tracking_plan') }}
)

(select 'missing' as problem, expected.* from expected except select 'missing' as problem, actual.* from actual)
union all
(select 'unexpected' as problem, actual.* from actual except select 'unexpected' as problem, expected.* from expected)
