-- One row per cohort with its identity (from the cohort model's config.meta), its compiled definition
-- and its size at as_of. Empty cohorts are listed too, with size 0, so a sync can tell "empty" from
-- "missing". Cohorts uploaded through the Cohort API are listed with kind `uploaded`.

with cohort_definitions as (

{% for model_name in cohort_model_names() %}
    {%- set meta = cohort_meta(model_name) %}
    {%- set definition = meta.get('cohort_definition') %}
    select
        {{ sql_string(meta['cohort_id']) }} as cohort_id,
        {{ sql_string(meta['name']) }} as cohort_name,
        {{ sql_string(meta['description']) }} as description,
        {{ sql_string(meta['kind']) }} as kind,
        {{ sql_string(meta['owner']) }} as owner,
        {{ sql_string(model_name) }} as model_name,
        {% if definition %}{{ sql_string(tojson(definition, sort_keys=true)) }}{% else %}null{% endif %} as definition
    union all
{%- endfor %}

    -- Cohorts uploaded through the Cohort API (int_uploaded_cohorts): data, not models, so they are
    -- all served by one model and have no compiled definition.
    select
        cohort_id,
        cohort_name,
        description,
        'uploaded' as kind,
        owner,
        'uploaded_cohort_memberships' as model_name,
        cast(null as varchar) as definition
    from {{ ref('int_uploaded_cohorts') }}

),

cohort_sizes as (

    select cohort_id, count(*) as member_count
    from {{ ref('cohort_memberships') }}
    group by cohort_id

)

select
    cast(cohort_definitions.cohort_id as varchar) as cohort_id,
    cast(cohort_definitions.cohort_name as varchar) as cohort_name,
    cast(cohort_definitions.description as varchar) as description,
    cast(cohort_definitions.kind as varchar) as kind,
    cast(cohort_definitions.owner as varchar) as owner,
    cast(coalesce(cohort_sizes.member_count, 0) as bigint) as size,
    cast({{ as_of() }} as timestamp) as computed_at,
    cast(cohort_definitions.model_name as varchar) as model_name,
    cast(cohort_definitions.definition as varchar) as definition,
    -- Wall-clock time of this dbt invocation (UTC), unlike computed_at which is the moment computed for.
    cast('{{ run_started_at.astimezone(modules.pytz.utc).strftime("%Y-%m-%d %H:%M:%S") }}' as timestamp) as last_computed_at

from cohort_definitions
left join cohort_sizes on cohort_definitions.cohort_id = cohort_sizes.cohort_id
