-- Which user each device belonged to last, at as_of: the Profile API answers ?device_id= with it.
-- Only devices seen with a user_id: an anonymous device is its own user (user_id = device_id).

select
    device_id,
    {{ cohortflow_arg_max('user_id', 'event_at') }} as user_id,
    max(event_at) as last_seen_at

from {{ ref('int_events_as_of') }}
where device_id is not null and user_id is not null
group by device_id
