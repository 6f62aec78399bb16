{#-
  The raw tables of uploaded cohorts, created empty when missing (on-run-start), so that `dbt build`
  works on a warehouse older than them and on a Postgres target where nobody created them. Their DDL is
  cohortflow/warehouse.py's RAW_DDL (the Dagster asset `uploaded_cohorts` writes them); keep both alike.
-#}
{% macro ensure_uploaded_cohort_tables() -%}
  {%- if execute -%}
    {{ return(
      "create schema if not exists raw;\n"
      ~ "create table if not exists raw.uploaded_cohort_changes ("
      ~ "change_id varchar not null, request_id varchar not null, cohort_id varchar not null, "
      ~ "operation varchar not null, cohort_name varchar, description varchar, owner varchar, "
      ~ "id_type varchar not null, id_count bigint not null, received_at timestamp not null, "
      ~ "change_sequence bigint not null, requested_by varchar not null, source_file varchar not null, "
      ~ "ingested_at timestamp not null);\n"
      ~ "create table if not exists raw.uploaded_cohort_change_ids (change_id varchar not null, user_id varchar not null)"
    ) }}
  {%- endif -%}
{%- endmacro %}
