-- One row per user and UTC calendar day with at least one event: counts per event type, sessions,
-- revenue and the first / last event of the day. Lifetime metrics read these ~30x fewer rows
-- instead of every event (int_user_daily_activity_as_of gives the rows visible at as_of).
--
-- Incremental: a run recomputes, from int_events, exactly the (user, day) pairs that received
-- events since this table's last run (dbt_loaded_at), reading only the events from the earliest
-- day they touch on, and replaces them
-- (delete+insert on user_id + activity_date). A late event for an old day re-opens that day only.
-- Not cut by as_of: the cut happens in int_user_daily_activity_as_of.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['user_id', 'activity_date'],
    on_schema_change='fail',
) }}

{#- The earliest day the new rows touch, as a literal: DuckDB then skips the row groups of older
    events (int_events is appended roughly in event-time order) instead of joining every event. -#}
{%- set earliest = none -%}
{%- if is_incremental() and execute -%}
  {%- set earliest = run_query("select min(event_at) from " ~ ref('int_events') ~ " where dbt_loaded_at > (select max(dbt_loaded_at) from " ~ this ~ ")").rows[0][0] -%}
{%- endif %}

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
    {%- if earliest is not none %}
    where events.event_at >= cast('{{ earliest.strftime("%Y-%m-%d") }}' as timestamp)
    {%- else %}
    where false
    {%- endif %}

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
