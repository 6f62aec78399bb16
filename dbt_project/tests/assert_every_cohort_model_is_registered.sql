-- Intent: fail when a model in models/cohorts/ is missing from cohort_model_names(), i.e. it would silently never reach cohort_memberships, cohorts or any sync.
{%- set registered = cohort_model_names() %}
{%- set unregistered = [] %}
{%- if execute %}
    {%- for node in cohort_nodes_in_graph() %}
        {%- if node.name not in registered %}{% do unregistered.append(node.name) %}{% endif %}
    {%- endfor %}
{%- endif %}

-- Depend on the catalogue so this runs after the cohort models exist.
select cohort_id as unregistered_model
from {{ ref('cohorts') }}
where false
{%- for model_name in unregistered %}
union all
select '{{ model_name }}' as unregistered_model
{%- endfor %}
