-- One row per user and UTC calendar day with at least one event: counts per event type, sessions,
-- revenue and the first / last event of the day. Lifetime metrics read these ~30x fewer rows
-- instead of every event (int_user_daily_activity_as_of gives the rows visible at as_of).
--
-- Incremental: a run recomputes, from all of int_events, exactly the (user, day) pairs that
-- received events since this table's last run (dbt_loaded_at), and replaces them
-- (delete+insert on user_id + activity_date). A late event for an old day re-opens that day only.
-- Not cut by as_of: the cut happens in int_user_daily_activity_as_of.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['user_id', 'activity_date'],
    on_schema_change='fail',
) }}

with events as (

    select
        user_id,
        cast(event_at as date) as activity_date,
        event_type,
        event_at,
        session_id,
        order_id,
        event_id,
        revenue,
        dbt_loaded_at

    from {{ ref('int_events') }}

),

{% if is_incremental() %}

touched_days as (

    select distinct user_id, activity_date
    from events
    where dbt_loaded_at > (select max(dbt_loaded_at) from {{ this }})

),

day_events as (

    select events.*
    from events
    inner join touched_days
        on events.user_id = touched_days.user_id
        and events.activity_date = touched_days.activity_date

)

{% else %}

day_events as (

    select * from events

)

{% endif %}

select
    user_id,
    activity_date,
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
    coalesce(sum(revenue) filter (where event_type = 'purchase'), 0) as purchase_revenue,
    -- A cancellation always lowers revenue, whatever sign its source used.
    coalesce(sum(-abs(revenue)) filter (where event_type = 'cancel_purchase'), 0) as cancelled_revenue,
    min(event_at) as first_event_at,
    max(event_at) as last_event_at,
    max(dbt_loaded_at) as dbt_loaded_at

from day_events
group by user_id, activity_date
