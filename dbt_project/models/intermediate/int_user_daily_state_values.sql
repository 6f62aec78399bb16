-- The per-value part of the per-day state (macros/daily_state.sql): for states that need the values
-- themselves (distinct counts, most frequent values, unique lists), one row per state, user, UTC day
-- and non-NULL value, with how often it occurred that day and when first.
--
-- Incremental like int_user_daily_state: the touched (user, day) pairs are replaced whole.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['state_id', 'user_id', 'activity_date'],
    on_schema_change='fail',
) }}

{{ daily_state_model(values=true) }}
