-- Per user with at least one event up to as_of: when they were active, how much recently, and
-- at which hour of day and on which day of the week they usually act (send-time personalisation).

with events as (

    select user_id, event_at, session_id
    from {{ ref('int_events_as_of') }}

),

events_per_hour as (

    select
        user_id,
        cast(extract(hour from event_at) as integer) as hour_of_day,
        count(*) as event_count

    from events
    group by user_id, cast(extract(hour from event_at) as integer)

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
        {{ cohortflow_iso_day_of_week('event_at') }} as day_of_week,
        count(*) as event_count

    from events
    group by user_id, {{ cohortflow_iso_day_of_week('event_at') }}

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

totals as (

    select
        user_id,
        min(event_at) as first_event_at,
        max(event_at) as last_event_at,
        count(*) filter (where {{ is_within_last('event_at', 30, 'day') }}) as event_count_30d,
        count(distinct session_id) filter (where {{ is_within_last('event_at', 30, 'day') }}) as session_count_30d

    from events
    group by user_id

)

select
    totals.user_id,
    totals.first_event_at,
    totals.last_event_at,
    totals.event_count_30d,
    totals.session_count_30d,
    preferred_hours.hour_of_day as preferred_hour_of_day,
    preferred_weekdays.day_of_week as preferred_day_of_week

from totals
left join preferred_hours on totals.user_id = preferred_hours.user_id
left join preferred_weekdays on totals.user_id = preferred_weekdays.user_id
