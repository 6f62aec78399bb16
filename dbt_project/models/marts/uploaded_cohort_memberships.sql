-- Every uploaded cohort's current members at as_of, with the cohort's name: what a sync ships to
-- deliver uploaded cohorts (models/syncs/uploaded_cohort_syncs.yml). The same rows are in
-- cohort_memberships, beside the cohorts computed from behaviour.

select
    cast(members.cohort_id as varchar) as cohort_id,
    cast(cohorts.cohort_name as varchar) as cohort_name,
    cast(members.user_id as varchar) as user_id,
    cast(members.entered_at as timestamp) as entered_at

from {{ ref('int_uploaded_cohort_members') }} as members
inner join {{ ref('int_uploaded_cohorts') }} as cohorts on cohorts.cohort_id = members.cohort_id
