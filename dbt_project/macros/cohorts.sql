{#-
  Cohort registry. A cohort is a model in models/cohorts/ that outputs (user_id, entered_at) and carries
  its identity in `config.meta` (cohort_id, name, description, owner, kind).

  dbt records dependencies while parsing, before the graph exists, so the marts that union all cohorts
  need their names here; everything else (ids, names, descriptions) is read from each model's meta.
  tests/assert_every_cohort_model_is_registered.sql fails when a cohort model is missing from this list.
-#}
{% macro cohort_model_names() -%}
  {{ return([
      'active_3_days_last_week',
      'big_spenders_90d',
      'big_spenders_inactive_7d',
      'campaign_new_customers',
      'cart_abandoners_24h',
      'churn_risk_30d',
      'consented_japanese_users',
      'electronics_browsers_7d',
      'evening_shoppers',
      'lapsing_users',
      'likely_buyers_7d',
      'new_subscribers_7d',
      'new_users_7d_without_purchase',
      'one_time_buyers_30d',
      'repeat_buyers_90d',
      'viewed_carted_not_purchased_7d',
  ]) }}
{%- endmacro %}


{#- Every model under models/cohorts/ (read from the graph, so only meaningful when `execute`). -#}
{% macro cohort_nodes_in_graph() -%}
  {%- set nodes = [] -%}
  {%- for node in graph.nodes.values() -%}
    {%- if node.resource_type == 'model' and node.package_name == project_name
          and node.original_file_path.replace('\\', '/').startswith('models/cohorts/') -%}
      {%- do nodes.append(node) -%}
    {%- endif -%}
  {%- endfor -%}
  {{ return(nodes | sort(attribute='name')) }}
{%- endmacro %}


{#-
  The meta of a cohort model as a dict with every required key, or a compile error naming what is missing.
  At parse time (execute is false) the graph is empty: return placeholders so the SQL still parses.
-#}
{% macro cohort_meta(model_name) -%}
  {%- set required = ['cohort_id', 'name', 'description', 'owner', 'kind'] -%}
  {%- if not execute -%}
    {%- set placeholder = {} -%}
    {%- for key in required -%}{%- do placeholder.update({key: model_name}) -%}{%- endfor -%}
    {{ return(placeholder) }}
  {%- endif -%}
  {%- set node = graph.nodes.get('model.' ~ project_name ~ '.' ~ model_name) -%}
  {%- if node is none -%}
    {{ exceptions.raise_compiler_error("cohort_model_names() lists '" ~ model_name ~ "', but no such model exists") }}
  {%- endif -%}
  {%- set meta = node.config.meta or node.meta or {} -%}
  {%- set missing = [] -%}
  {%- for key in required -%}
    {%- if not meta.get(key) -%}{%- do missing.append(key) -%}{%- endif -%}
  {%- endfor -%}
  {%- if missing -%}
    {{ exceptions.raise_compiler_error("Cohort model '" ~ model_name ~ "' lacks config.meta keys: " ~ missing | join(', ')) }}
  {%- endif -%}
  {%- if meta['kind'] not in cohort_kinds() -%}
    {{ exceptions.raise_compiler_error("Cohort model '" ~ model_name ~ "': meta.kind '" ~ meta['kind'] ~ "' is not one of " ~ cohort_kinds() | join(', ')) }}
  {%- endif -%}
  {{ return(meta) }}
{%- endmacro %}


{#- behavioural: rules on events and properties (the cohort() macro); predictive: a percentile range of a
    prediction; uploaded: a list someone provided. Only behavioural cohorts exist so far. -#}
{% macro cohort_kinds() -%}
  {{ return(['behavioural', 'predictive', 'uploaded']) }}
{%- endmacro %}


{#- A SQL string literal (single quotes doubled), for meta text rendered into SQL. -#}
{% macro sql_string(value) -%}
  '{{ (value ~ '') | replace("'", "''") }}'
{%- endmacro %}
