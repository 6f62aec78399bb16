{#-
  cohortflow_json_text_fields(column, keys): the text values of several top-level keys of a JSON
  object column, as one array whose element i is key i (1-based on both engines; NULL when the key
  is absent or JSON null, like `->>`). Index it in a later CTE: `fields[1]`, `fields[2]`, ...

      {{ cohortflow_json_text_fields('event_properties', ['item_id', 'price']) }} as fields

  Why: on DuckDB each `->>` parses the JSON text again; one json_extract_string with a list of
  paths parses it once. Six keys over 10M events: ~28 s -> ~8.5 s (docs/benchmarks.md).
-#}
{% macro cohortflow_json_text_fields(column, keys) -%}
  {{- return(adapter.dispatch('cohortflow_json_text_fields', 'cohortflow')(column, keys)) -}}
{%- endmacro %}


{% macro duckdb__cohortflow_json_text_fields(column, keys) -%}
  json_extract_string({{ column }}, [{% for key in keys %}'{{ key }}'{{ ', ' if not loop.last }}{% endfor %}])
{%- endmacro %}


{#- Postgres (json or jsonb) and standard SQL: one `->>` per key in an array literal. -#}
{% macro default__cohortflow_json_text_fields(column, keys) -%}
  array[{% for key in keys %}({{ column }} ->> '{{ key }}'){{ ', ' if not loop.last }}{% endfor %}]
{%- endmacro %}
