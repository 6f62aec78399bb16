-- Per user with at least one event up to as_of: when they were active, how much recently, and
-- at which hour of day and on which day of the week they usually act (send-time personalisation).
--
-- Cost: nothing here reads every event. First / last event and the day of the week come from the
-- per-day aggregates (int_user_daily_activity_as_of); the hour of day, the 30-day events and
-- sessions from the per-day state (macros/daily_state.sql), which reads events only for the as_of
-- day and the day the 30-day window starts in.

with daily_activity as (

    select user_id, activity_date, event_count, first_event_at, last_event_at
    from {{ ref('int_user_daily_activity_as_of') }}

),

events_per_hour as (

    select user_id, cast(property_value as integer) as hour_of_day, sum(value_count) as event_count
    from ({{ daily_state_window_values(builtin_states().event_hours, ever()) }}) as hour_days
    group by user_id, cast(property_value as integer)

),

preferred_hours as (

    select user_id, hour_of_day
    from (
        select
            user_id,
            hour_of_day,
            -- Ties go to the earliest hour so the answer is stable.
            row_number() over (partition by user_id order by event_count desc, hour_of_day) as hour_rank
        from events_per_hour
    ) as ranked
    where hour_rank = 1

),

events_per_weekday as (

    select
        user_id,
        {{ cohortflow_iso_day_of_week('activity_date') }} as day_of_week,
        sum(event_count) as event_count

    from daily_activity
    group by user_id, {{ cohortflow_iso_day_of_week('activity_date') }}

),

preferred_weekdays as (

    select user_id, day_of_week
    from (
        select
            user_id,
            day_of_week,
            -- Ties go to the earliest day of the ISO week (Monday first).
            row_number() over (partition by user_id order by event_count desc, day_of_week) as day_rank
        from events_per_weekday
    ) as ranked
    where day_rank = 1

),

recent_counts as (

    select user_id, sum(event_count) as event_count_30d
    from ({{ daily_state_window_rows(builtin_states().any_event, last(30, 'days')) }}) as recent_days
    group by user_id

),

recent_sessions as (

    -- Distinct sessions across the days (a session over midnight counts once); events without a
    -- session are not a session.
    select user_id, count(distinct property_value) as session_count_30d
    from ({{ daily_state_window_values(builtin_states().sessions, last(30, 'days')) }}) as session_days
    group by user_id

),

totals as (

    select
        user_id,
        min(first_event_at) as first_event_at,
        max(last_event_at) as last_event_at

    from daily_activity
    group by user_id

)

select
    totals.user_id,
    totals.first_event_at,
    totals.last_event_at,
    coalesce(recent_counts.event_count_30d, 0) as event_count_30d,
    coalesce(recent_sessions.session_count_30d, 0) as session_count_30d,
    preferred_hours.hour_of_day as preferred_hour_of_day,
    preferred_weekdays.day_of_week as preferred_day_of_week

from totals
left join recent_counts on totals.user_id = recent_counts.user_id
left join recent_sessions on totals.user_id = recent_sessions.user_id
left join preferred_hours on totals.user_id = preferred_hours.user_id
left join preferred_weekdays on totals.user_id = preferred_weekdays.user_id
