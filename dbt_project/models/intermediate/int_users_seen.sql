-- Every user known at as_of: someone with an event at or before as_of, or who signed up by then
-- (a users row with created_at <= as_of, even without events). Users created later do not exist yet.
-- First / last event come from the per-day aggregates (int_user_daily_activity_as_of), so this
-- reads one row per active user-day instead of every event.

with active_users as (

    select
        user_id,
        min(first_event_at) as first_event_at,
        max(last_event_at) as last_event_at

    from {{ ref('int_user_daily_activity_as_of') }}
    group by user_id

),

signed_up_users as (

    select user_id, created_at
    from {{ ref('stg_users') }}
    where created_at <= {{ as_of() }}

)

select
    coalesce(active_users.user_id, signed_up_users.user_id) as user_id,
    -- Whichever came first: the sign-up or the first event (anonymous browsing before sign-up).
    case
        when active_users.first_event_at is null then signed_up_users.created_at
        when signed_up_users.created_at is null then active_users.first_event_at
        when signed_up_users.created_at < active_users.first_event_at then signed_up_users.created_at
        else active_users.first_event_at
    end as first_seen_at,
    active_users.last_event_at as last_seen_at

from active_users
full outer join signed_up_users on active_users.user_id = signed_up_users.user_id
