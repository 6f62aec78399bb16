-- Per user with a purchase or a cancellation up to as_of: orders and net revenue.
-- Net revenue (purchases minus cancellations, exact) comes from the per-day state
-- (macros/daily_state.sql, state `net_revenue`): lifetime and the last 90 days.

with orders_per_user as (

    select user_id, count(*) as order_count
    from {{ ref('int_orders') }}
    group by user_id

),

revenue_lifetime as (

    select user_id, sum(input_sum) as revenue_lifetime
    from ({{ daily_state_window_rows(builtin_states().net_revenue, ever()) }}) as revenue_days
    group by user_id

),

revenue_90d as (

    select user_id, sum(input_sum) as revenue_90d
    from ({{ daily_state_window_rows(builtin_states().net_revenue, last(90, 'days')) }}) as revenue_days
    group by user_id

),

revenue_per_user as (

    select revenue_lifetime.user_id, revenue_lifetime.revenue_lifetime, coalesce(revenue_90d.revenue_90d, 0) as revenue_90d
    from revenue_lifetime
    left join revenue_90d on revenue_90d.user_id = revenue_lifetime.user_id

)

select
    coalesce(orders_per_user.user_id, revenue_per_user.user_id) as user_id,
    coalesce(orders_per_user.order_count, 0) as order_count,
    cast(coalesce(revenue_per_user.revenue_lifetime, 0) as {{ cohortflow_money_sum_type() }}) as revenue_lifetime,
    cast(coalesce(revenue_per_user.revenue_90d, 0) as {{ cohortflow_money_sum_type() }}) as revenue_90d

from orders_per_user
full outer join revenue_per_user on orders_per_user.user_id = revenue_per_user.user_id
