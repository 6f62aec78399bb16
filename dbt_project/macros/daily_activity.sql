{#-
  The per-user, per-day measures of int_user_daily_activity, written once: the stored days
  (int_user_daily_activity) and the as_of day recomputed from its events (int_user_daily_activity_as_of)
  must add up the same way, so both select exactly these expressions, grouped by user and day.
  Every measure is additive across days except the distinct session count and first/last event.
-#}
{% macro user_daily_activity_measures() -%}
    count(*) as event_count,
    count(distinct session_id) as session_count,
    count(*) filter (where event_type = 'session_start') as session_start_count,
    count(*) filter (where event_type = 'view_item') as view_item_count,
    count(*) filter (where event_type = 'add_to_cart') as add_to_cart_count,
    count(*) filter (where event_type = 'purchase') as purchase_count,
    count(*) filter (where event_type = 'cancel_purchase') as cancel_purchase_count,
    count(*) filter (where event_type = 'start_subscription') as start_subscription_count,
    count(*) filter (where event_type = 'cancel_subscription') as cancel_subscription_count,
    -- Same rule as int_orders: a purchase line without order_id is an order on its own. Written as
    -- two counts because a distinct over coalesce(order_id, event_id) costs ~2x the CPU on 10M rows.
    count(distinct order_id) filter (where event_type = 'purchase')
        + count(*) filter (where event_type = 'purchase' and order_id is null) as order_count,
    -- Exact sums (macros/money.sql): adding days in any order gives the same total.
    cast(coalesce(sum(revenue) filter (where event_type = 'purchase'), 0) as {{ cohortflow_money_sum_type() }}) as purchase_revenue,
    -- A cancellation always lowers revenue, whatever sign its source used.
    cast(coalesce(sum(-abs(revenue)) filter (where event_type = 'cancel_purchase'), 0) as {{ cohortflow_money_sum_type() }}) as cancelled_revenue,
    min(event_at) as first_event_at,
    max(event_at) as last_event_at
{%- endmacro %}
