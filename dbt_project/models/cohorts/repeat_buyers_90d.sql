-- Placed at least 3 distinct orders in (as_of - 90 days, as_of].
-- entered_at: when the third order of the window was placed, the moment the user reached 3.

with recent_orders as (

    select
        user_id,
        ordered_at,
        row_number() over (partition by user_id order by ordered_at, order_id) as order_number

    from {{ ref('int_orders') }}
    where {{ is_within_last('ordered_at', 90, 'day') }}

)

select
    cast(user_id as varchar) as user_id,
    cast(ordered_at as timestamp) as entered_at

from recent_orders
where order_number = 3
