{#-
  Parts of timestamps and differences between them, the same on every engine.

    cohortflow_hour(ts)                  0..23 as integer (extract gives bigint on DuckDB, numeric on Postgres)
    (cohortflow_iso_day_of_week, 1 = Monday .. 7 = Sunday, lives in b_dates.sql)
    cohortflow_epoch_seconds(ts)         seconds since 1970-01-01 00:00 UTC, with the fraction, as double precision
    cohortflow_seconds_between(a, b)     b - a in seconds, with the fraction (not a count of boundaries
                                         like dbt.datediff), as double precision
    cohortflow_date_spine(start, end)    a FROM-able subquery: one row per day, column `day` (date),
                                         from the day of start to the day of end, both included
    cohortflow_utc_to_local(ts, zone)    the wall-clock time in the IANA zone `zone` (a SQL expression,
                                         e.g. a column: 'Europe/London') of the UTC timestamp `ts`, as a
                                         timestamp without zone; daylight saving time applied (the zone's
                                         rules on that date). The zone must be a known one (below): an
                                         unknown name is an error on both engines.
    cohortflow_time_zone_names()         a FROM-able subquery: one row per zone name the engine knows,
                                         column `name` (DuckDB: ICU's list; Postgres: its tz database)

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


{% macro cohortflow_utc_to_local(ts, time_zone) -%}
  {{- return(adapter.dispatch('cohortflow_utc_to_local', 'cohortflow')(ts, time_zone)) -}}
{%- endmacro %}

{#- DuckDB (ICU): timezone('UTC', ts) reads the naive ts as UTC, whatever the session zone; timezone(zone,
    timestamptz) gives the wall clock there. -#}
{% macro duckdb__cohortflow_utc_to_local(ts, time_zone) -%}
  timezone({{ time_zone }}, timezone('UTC', {{ ts }}))
{%- endmacro %}

{#- Standard SQL (Postgres): timestamp AT TIME ZONE 'UTC' is the instant, timestamptz AT TIME ZONE zone its wall clock there. -#}
{% macro default__cohortflow_utc_to_local(ts, time_zone) -%}
  (({{ ts }}) at time zone 'UTC') at time zone ({{ time_zone }})
{%- endmacro %}


{% macro cohortflow_time_zone_names() -%}
  {{- return(adapter.dispatch('cohortflow_time_zone_names', 'cohortflow')()) -}}
{%- endmacro %}

{% macro duckdb__cohortflow_time_zone_names() -%}
  (select cast(name as varchar) as name from pg_timezone_names())
{%- endmacro %}

{% macro default__cohortflow_time_zone_names() -%}
  (select cast(name as varchar) as name from pg_timezone_names)
{%- endmacro %}
