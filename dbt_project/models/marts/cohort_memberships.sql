-- One row per current member of every cohort at as_of, tagged with the cohort_id from the cohort
-- model's meta. The cohort list comes from cohort_model_names() (macros/cohorts.sql); uploaded cohorts
-- (int_uploaded_cohort_members) follow.

{% for model_name in cohort_model_names() %}
    {%- set meta = cohort_meta(model_name) %}
select
    cast({{ sql_string(meta['cohort_id']) }} as varchar) as cohort_id,
    cast(user_id as varchar) as user_id,
    cast(entered_at as timestamp) as entered_at
from {{ ref(model_name) }}
union all
{%- endfor %}

-- Cohorts uploaded through the Cohort API: their changes folded up to as_of.
select
    cast(cohort_id as varchar) as cohort_id,
    cast(user_id as varchar) as user_id,
    cast(entered_at as timestamp) as entered_at
from {{ ref('int_uploaded_cohort_members') }}
