-- Intent: fail when any cohort member's entered_at lies after the as_of the cohort was computed for (a window or as_of cut-off bug).
-- Shown in Dagster as a check on cohort_memberships (it reads two models).
{{ config(meta={'dagster': {'ref': {'name': 'cohort_memberships'}}}) }}

select
    memberships.cohort_id,
    memberships.user_id,
    memberships.entered_at,
    cohorts.computed_at

from {{ ref('cohort_memberships') }} as memberships
inner join {{ ref('cohorts') }} as cohorts on memberships.cohort_id = cohorts.cohort_id
where memberships.entered_at > cohorts.computed_at
