{#-
  ISO day of week of a timestamp as an integer, 1 = Monday ... 7 = Sunday (UTC, as stored).
  DuckDB and Postgres both know `isodow`; Spark numbers Sunday = 1, so it is shifted there.
-#}
{% macro cohortflow_iso_day_of_week(expression) -%}
  {{- return(adapter.dispatch('cohortflow_iso_day_of_week', 'cohortflow')(expression)) -}}
{%- endmacro %}

{% macro default__cohortflow_iso_day_of_week(expression) -%}
  cast(extract(isodow from {{ expression }}) as integer)
{%- endmacro %}

{% macro spark__cohortflow_iso_day_of_week(expression) -%}
  cast(((dayofweek({{ expression }}) + 5) % 7) + 1 as integer)
{%- endmacro %}
