{#-
  cohortflow_safe_divide(numerator, denominator): numerator / denominator as double precision, NULL
  when the denominator is 0 or NULL. Postgres divides integers as integers (7 / 2 = 3; DuckDB: 3.5),
  so the numerator is cast first on every engine.
-#}
{% macro cohortflow_safe_divide(numerator, denominator) -%}
  {{- return(adapter.dispatch('cohortflow_safe_divide', 'cohortflow')(numerator, denominator)) -}}
{%- endmacro %}

{% macro default__cohortflow_safe_divide(numerator, denominator) -%}
  (cast({{ numerator }} as double precision) / nullif({{ denominator }}, 0))
{%- endmacro %}


{#-
  cohortflow_round(value, digits): a double rounded half away from zero to `digits` decimals, as
  double precision. Postgres has round(numeric, int) only, so the value goes through numeric there
  (15 significant digits, which is what a double holds).
-#}
{% macro cohortflow_round(value, digits) -%}
  {{- return(adapter.dispatch('cohortflow_round', 'cohortflow')(value, digits)) -}}
{%- endmacro %}

{% macro default__cohortflow_round(value, digits) -%}
  cast(round(cast({{ value }} as numeric), {{ digits }}) as double precision)
{%- endmacro %}

{% macro duckdb__cohortflow_round(value, digits) -%}
  cast(round({{ value }}, {{ digits }}) as double precision)
{%- endmacro %}
