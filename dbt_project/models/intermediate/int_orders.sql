-- One row per (user, order) from purchase lines up to as_of.
-- Cancellations are separate events (Online Retail gives them their own invoice), so they do not
-- remove an order here; they only lower revenue in int_user_purchases_aggregated.

with purchase_lines as (

    select
        user_id,
        -- A purchase line without order_id is an order on its own.
        coalesce(order_id, event_id) as order_id,
        event_at,
        revenue

    from {{ ref('int_events_as_of') }}
    where event_type = 'purchase'

)

select
    user_id,
    order_id,
    min(event_at) as ordered_at,
    count(*) as line_count,
    cast(coalesce(sum(revenue), 0) as {{ cohortflow_money_sum_type() }}) as order_revenue

from purchase_lines
group by user_id, order_id
