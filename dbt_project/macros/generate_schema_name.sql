{#-
  Use a model's custom schema as-is (staging, intermediate, marts, cohorts) instead of dbt's default
  "<target schema>_<custom schema>": Python code and destinations read fixed names like marts.user_properties.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {%- if custom_schema_name is none -%}
    {{ target.schema }}
  {%- else -%}
    {{ custom_schema_name | trim }}
  {%- endif -%}
{%- endmacro %}
