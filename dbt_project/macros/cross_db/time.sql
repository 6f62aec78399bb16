{#-
  Parts of timestamps and differences between them, the same on every engine.

    cohortflow_hour(ts)                  0..23 as integer (extract gives bigint on DuckDB, numeric on Postgres)
    (cohortflow_iso_day_of_week, 1 = Monday .. 7 = Sunday, lives in b_dates.sql)
    cohortflow_epoch_seconds(ts)         seconds since 1970-01-01 00:00 UTC, with the fraction, as double precision
    cohortflow_seconds_between(a, b)     b - a in seconds, with the fraction (not a count of boundaries
                                         like dbt.datediff), as double precision
    cohortflow_date_spine(start, end)    a FROM-able subquery: one row per day, column `day` (date),
                                         from the day of start to the day of end, both included

  Write interval literals as `interval '30 days'` (both engines), never DuckDB's `interval 30 day`.
-#}
{% macro cohortflow_hour(ts) -%}
  {{- return(adapter.dispatch('cohortflow_hour', 'cohortflow')(ts)) -}}
{%- endmacro %}

{% macro default__cohortflow_hour(ts) -%}
  cast(extract(hour from {{ ts }}) as integer)
{%- endmacro %}


{% macro cohortflow_epoch_seconds(ts) -%}
  {{- return(adapter.dispatch('cohortflow_epoch_seconds', 'cohortflow')(ts)) -}}
{%- endmacro %}

{% macro default__cohortflow_epoch_seconds(ts) -%}
  cast(extract(epoch from {{ ts }}) as double precision)
{%- endmacro %}


{% macro cohortflow_seconds_between(start_ts, end_ts) -%}
  ({{ cohortflow_epoch_seconds(end_ts) }} - {{ cohortflow_epoch_seconds(start_ts) }})
{%- endmacro %}


{% macro cohortflow_date_spine(start_date, end_date) -%}
  {{- return(adapter.dispatch('cohortflow_date_spine', 'cohortflow')(start_date, end_date)) -}}
{%- endmacro %}

{% macro default__cohortflow_date_spine(start_date, end_date) -%}
  (select cast(spine_day as date) as day
   from generate_series(cast(cast({{ start_date }} as date) as timestamp),
                   cast(cast({{ end_date }} as date) as timestamp), interval '1 day') as spine(spine_day))
{%- endmacro %}
