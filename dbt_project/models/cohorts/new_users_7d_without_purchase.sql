-- First seen in (as_of - 7 days, as_of] and no purchase at all up to as_of: the onboarding audience.
-- entered_at: first_seen_at, the moment they became a new user (they qualify from then until they buy).

with new_users as (

    select user_id, first_seen_at
    from {{ ref('int_users_seen') }}
    where {{ is_within_last('first_seen_at', 7, 'day') }}

),

buyers as (

    select distinct user_id
    from {{ ref('int_orders') }}

)

select
    cast(new_users.user_id as varchar) as user_id,
    cast(new_users.first_seen_at as timestamp) as entered_at

from new_users
left join buyers on new_users.user_id = buyers.user_id
where buyers.user_id is null
