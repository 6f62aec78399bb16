{#-
  Recommendations in the dbt project (docs/recommendations.md): each is a table of the source
  `recommendations` with config.meta.recommendation, written by its Dagster asset
  (orchestration/recommendations.py). As for predictions, the models that union them need the names
  when dbt parses; cohortflow/declarations.py refuses a declared recommendation missing here.
-#}
{% macro recommendation_names() -%}
  {{ return(['products_for_you']) }}
{%- endmacro %}


{#- The rows of a recommendation's latest run at or before as_of() (its table keeps every run). -#}
{% macro recommendations_as_of(recommendation) -%}
  {%- set relation = source('recommendations', recommendation) -%}
  select * from {{ relation }}
  where as_of = (select max(as_of) from {{ relation }} where as_of <= {{ as_of() }})
{%- endmacro %}


{#- on-run-start: empty tables for recommendations not generated yet (columns: ml/tables.py). -#}
{% macro ensure_recommendation_tables() -%}
  {%- if execute -%}
    {%- set statements = ["create schema if not exists recommendations"] -%}
    {%- for name in recommendation_names() -%}
      {%- do statements.append(
            "create table if not exists recommendations." ~ name ~ " ("
            ~ "rec_id varchar not null, user_id varchar not null, rank integer not null, "
            ~ "item_id varchar not null, score double precision, is_control boolean not null, "
            ~ "source varchar not null, model_version varchar not null, "
            ~ "generated_at timestamp not null, as_of timestamp not null)") -%}
    {%- endfor -%}
    {{ return(statements | join(";\n")) }}
  {%- endif -%}
{%- endmacro %}
