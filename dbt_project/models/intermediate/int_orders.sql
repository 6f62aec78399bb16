-- One row per (user, order) from purchase lines up to as_of.
-- Cancellations are separate events (Online Retail gives them their own invoice), so they do not
-- remove an order here; they only lower revenue in int_user_purchases_aggregated.
-- Read from the per-day state (macros/daily_state.sql, state `orders`): one row per user, day and
-- order, plus the purchase lines of the as_of day; an order spanning two days is one order.

with order_days as (

    {{ daily_state_window_values(builtin_states().orders, ever()) }}

)

select
    user_id,
    property_value as order_id,
    min(first_value_at) as ordered_at,
    sum(value_count) as line_count,
    cast(coalesce(sum(value_sum), 0) as {{ cohortflow_money_sum_type() }}) as order_revenue

from order_days
group by user_id, property_value
