{#-
  cohortflow_arg_max(value, order_by, where=none): `value` of the row with the largest `order_by` in
  the group (DuckDB's arg_max). Rows where value or order_by is NULL are skipped, as DuckDB does;
  `where` (SQL boolean) restricts the rows further, like an aggregate FILTER. order_by should be
  unique within the group: on a tie either engine may pick any of the tied rows.
  cohortflow_arg_min: the same with the smallest order_by.

      {{ cohortflow_arg_max('email', 'update_sequence', 'email is not null') }} as email
-#}
{% macro cohortflow_arg_max(value, order_by, where=none) -%}
  {{- return(adapter.dispatch('cohortflow_arg_max', 'cohortflow')(value, order_by, where)) -}}
{%- endmacro %}

{% macro cohortflow_arg_min(value, order_by, where=none) -%}
  {{- return(adapter.dispatch('cohortflow_arg_min', 'cohortflow')(value, order_by, where)) -}}
{%- endmacro %}


{% macro duckdb__cohortflow_arg_max(value, order_by, where) -%}
  arg_max({{ value }}, {{ order_by }}){% if where is not none %} filter (where {{ where }}){% endif %}
{%- endmacro %}

{% macro duckdb__cohortflow_arg_min(value, order_by, where) -%}
  arg_min({{ value }}, {{ order_by }}){% if where is not none %} filter (where {{ where }}){% endif %}
{%- endmacro %}


{#- Standard SQL: the first element of the values ordered by order_by (Postgres has no arg_max). -#}
{% macro default__cohortflow_arg_max(value, order_by, where) -%}
  {{- cohortflow_first_by(value, order_by, 'desc', where) -}}
{%- endmacro %}

{% macro default__cohortflow_arg_min(value, order_by, where) -%}
  {{- cohortflow_first_by(value, order_by, 'asc', where) -}}
{%- endmacro %}

{% macro cohortflow_first_by(value, order_by, direction, where) -%}
  (array_agg({{ value }} order by {{ order_by }} {{ direction }}) filter (
      where ({{ value }}) is not null and ({{ order_by }}) is not null{% if where is not none %} and ({{ where }}){% endif %}
  ))[1]
{%- endmacro %}
