-- The per-day state of every computed property and cohort condition (macros/daily_state.sql): per
-- state, user and UTC day with a matching event, the day's partial aggregates. Models cut by as_of
-- read the stored days wholly inside their windows and the events of the two edge days only, so an
-- hourly run reads ~ one row per active user and day instead of every event, with the same results.
--
-- Incremental: a run recomputes, from int_events, the (user, day) pairs that received events since
-- the table's last run (late and back-dated events included) and replaces them (delete+insert);
-- a state no model read before is computed over all history. Not cut by as_of.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['state_id', 'user_id', 'activity_date'],
    on_schema_change='fail',
) }}

{{ daily_state_model(values=false) }}
