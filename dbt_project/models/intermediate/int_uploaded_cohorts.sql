-- One row per uploaded cohort that exists at as_of: created (POST /api/3/cohorts/upload) at or before
-- it. Name, description and owner come from its latest create / replace at or before as_of.

with changes as (

    select *
    from {{ ref('stg_uploaded_cohort_changes') }}
    where received_at <= {{ as_of() }}

),

created as (

    select cohort_id, min(received_at) as created_at
    from changes
    where operation = 'create'
    group by cohort_id

),

latest_list as (

    select cohort_id, cohort_name, description, owner, id_type, id_count
    from (
        select
            cohort_id,
            cohort_name,
            description,
            owner,
            id_type,
            id_count,
            row_number() over (partition by cohort_id order by change_sequence desc, change_id desc) as recency
        from changes
        where operation in ('create', 'replace')
    ) as lists
    where recency = 1

),

activity as (

    select cohort_id, max(received_at) as last_changed_at, count(*) as change_count
    from changes
    group by cohort_id

)

select
    created.cohort_id,
    coalesce(latest_list.cohort_name, created.cohort_id) as cohort_name,
    latest_list.description,
    coalesce(latest_list.owner, 'unknown') as owner,
    latest_list.id_type,
    created.created_at,
    activity.last_changed_at,
    cast(activity.change_count as bigint) as change_count

from created
inner join latest_list on latest_list.cohort_id = created.cohort_id
inner join activity on activity.cohort_id = created.cohort_id
