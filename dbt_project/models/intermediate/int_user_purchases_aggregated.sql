-- Per user with a purchase or a cancellation up to as_of: orders and net revenue.

with orders_per_user as (

    select user_id, count(*) as order_count
    from {{ ref('int_orders') }}
    group by user_id

),

revenue_lines as (

    select
        user_id,
        event_at,
        -- A cancellation always lowers revenue, whatever sign its source used.
        case
            when event_type = 'purchase' then revenue
            else -abs(revenue)
        end as net_revenue

    from {{ ref('int_events_as_of') }}
    where event_type in ('purchase', 'cancel_purchase')
      and revenue is not null

),

revenue_per_user as (

    select
        user_id,
        -- Exact decimal sums (macros/money.sql).
        sum(net_revenue) as revenue_lifetime,
        coalesce(sum(net_revenue) filter (where {{ is_within_last('event_at', 90, 'day') }}), 0) as revenue_90d

    from revenue_lines
    group by user_id

)

select
    coalesce(orders_per_user.user_id, revenue_per_user.user_id) as user_id,
    coalesce(orders_per_user.order_count, 0) as order_count,
    cast(coalesce(revenue_per_user.revenue_lifetime, 0) as {{ cohortflow_money_sum_type() }}) as revenue_lifetime,
    cast(coalesce(revenue_per_user.revenue_90d, 0) as {{ cohortflow_money_sum_type() }}) as revenue_90d

from orders_per_user
full outer join revenue_per_user on orders_per_user.user_id = revenue_per_user.user_id
