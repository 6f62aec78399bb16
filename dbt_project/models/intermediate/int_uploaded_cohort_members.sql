-- Current members of every uploaded cohort at as_of: its changes at or before as_of, folded in the
-- order the API accepted them ((change_sequence, change_id)). A create or replace is a whole new list
-- (what came before it no longer counts); each add / remove after it applies in order, and the last
-- change naming a user decides. Ids that are not users known at as_of (int_users_seen) stay in the
-- list but are not members until they are known.
-- entered_at: the first add (or the list) naming the user since they were last removed, and never
-- before the user was first seen.
{{ config(materialized='table') }}

with changes as (

    select cohort_id, change_id, change_sequence, operation, received_at
    from {{ ref('stg_uploaded_cohort_changes') }}
    where received_at <= {{ as_of() }}

),

numbered as (

    select
        changes.*,
        row_number() over (partition by cohort_id order by change_sequence, change_id) as change_number
    from changes

),

latest_list as (

    -- the last create / replace of each cohort: everything before it is superseded
    select cohort_id, max(change_number) as list_number
    from numbered
    where operation in ('create', 'replace')
    group by cohort_id

),

applying as (

    select
        numbered.cohort_id,
        numbered.change_id,
        numbered.change_number,
        numbered.received_at,
        case when numbered.operation = 'remove' then 0 else 1 end as is_added
    from numbered
    inner join latest_list on latest_list.cohort_id = numbered.cohort_id
    where numbered.change_number >= latest_list.list_number

),

mentions as (

    select
        applying.cohort_id,
        ids.user_id,
        applying.change_number,
        applying.received_at,
        applying.is_added,
        coalesce(
            max(case when applying.is_added = 0 then applying.change_number end)
                over (partition by applying.cohort_id, ids.user_id),
            0
        ) as last_removed_number
    from applying
    inner join {{ ref('stg_uploaded_cohort_change_ids') }} as ids on ids.change_id = applying.change_id

),

listed as (

    select
        cohort_id,
        user_id,
        min(case when is_added = 1 and change_number > last_removed_number then received_at end) as listed_at
    from mentions
    group by cohort_id, user_id
    -- the last change naming the user added them
    having max(case when is_added = 1 then change_number else 0 end) > max(last_removed_number)

)

select
    cast(listed.cohort_id as varchar) as cohort_id,
    cast(listed.user_id as varchar) as user_id,
    cast(
        case when users.first_seen_at > listed.listed_at then users.first_seen_at else listed.listed_at end
        as timestamp
    ) as entered_at

from listed
inner join {{ ref('int_users_seen') }} as users on users.user_id = listed.user_id
