-- Membership intervals across runs: one row per stretch of time a user was in a cohort, as seen by the
-- runs. A run compares cohort_memberships (its as_of) with the rows still open and
--   - opens a row (recorded_at = as_of, exited_at NULL) for each member without one,
--   - closes the open row of each user who left (exited_at = as_of),
--   - leaves rows of users who stayed alone.
-- Re-running the same as_of changes nothing. A run for an earlier as_of than the runs before it
-- rewinds the history to that moment: rows recorded after it are deleted (pre-hook), rows closed after
-- it are reopened or closed at this as_of, exactly as if the later runs had not happened.
-- Never full-refreshed (it is the only record of past runs): full_refresh=false.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['cohort_id', 'user_id', 'recorded_at'],
    on_schema_change='append_new_columns',
    full_refresh=false,
    pre_hook="{% if is_incremental() %}delete from {{ this }} where recorded_at > {{ as_of() }}{% else %}select 1{% endif %}",
) }}

with current_members as (

    select cohort_id, user_id, entered_at
    from {{ ref('cohort_memberships') }}

),

{% if is_incremental() %}

open_at_as_of as (

    -- Rows open at as_of: not closed yet, or closed by a run for a later moment (a rewind).
    -- recorded_at <= as_of repeats the pre-hook's filter for unit tests, which do not run hooks.
    select cohort_id, user_id, entered_at, recorded_at, exited_at
    from {{ this }}
    where recorded_at <= {{ as_of() }}
      and (exited_at is null or exited_at > {{ as_of() }})

),

reopened as (

    -- Still a member at as_of, but a later run had closed the row: undo that.
    select open_rows.cohort_id, open_rows.user_id, open_rows.entered_at, open_rows.recorded_at,
           cast(null as timestamp) as exited_at
    from open_at_as_of as open_rows
    inner join current_members
        on current_members.cohort_id = open_rows.cohort_id and current_members.user_id = open_rows.user_id
    where open_rows.exited_at is not null

),

exited as (

    select open_rows.cohort_id, open_rows.user_id, open_rows.entered_at, open_rows.recorded_at,
           {{ as_of() }} as exited_at
    from open_at_as_of as open_rows
    where not exists (
        select 1 from current_members
        where current_members.cohort_id = open_rows.cohort_id and current_members.user_id = open_rows.user_id
    )

),

joined as (

    select current_members.cohort_id, current_members.user_id, current_members.entered_at,
           {{ as_of() }} as recorded_at, cast(null as timestamp) as exited_at
    from current_members
    where not exists (
        select 1 from open_at_as_of as open_rows
        where open_rows.cohort_id = current_members.cohort_id and open_rows.user_id = current_members.user_id
    )

),

changes as (

    select * from reopened
    union all
    select * from exited
    union all
    select * from joined

)

{% else %}

changes as (

    select cohort_id, user_id, entered_at, {{ as_of() }} as recorded_at, cast(null as timestamp) as exited_at
    from current_members

)

{% endif %}

select
    cast(cohort_id as varchar) as cohort_id,
    cast(user_id as varchar) as user_id,
    cast(entered_at as timestamp) as entered_at,
    cast(recorded_at as timestamp) as recorded_at,
    cast(exited_at as timestamp) as exited_at

from changes
