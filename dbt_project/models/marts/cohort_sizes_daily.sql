-- Size of every cohort per day, for "size over time" charts: one row per cohort per UTC day of as_of,
-- written by each run; a later run on the same day replaces the row (the latest run of the day wins).
-- A run for an earlier day than runs before it rewinds: rows of later days are deleted (pre-hook),
-- as cohort_membership_history does. Never full-refreshed: full_refresh=false.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['cohort_id', 'day'],
    on_schema_change='append_new_columns',
    full_refresh=false,
    pre_hook="{% if is_incremental() %}delete from {{ this }} where day > cast({{ as_of() }} as date){% else %}select 1{% endif %}",
) }}

select
    cast(cohort_id as varchar) as cohort_id,
    cast(computed_at as date) as day,
    cast(size as bigint) as size,
    cast(computed_at as timestamp) as computed_at

from {{ ref('cohorts') }}
