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
    {{ user_daily_activity_measures() }},
    max(dbt_loaded_at) as dbt_loaded_at

from day_events
group by user_id, activity_date
