{#-
  Cross-engine SQL (DuckDB / PostgreSQL). Every macro here is dispatched: `default__` is standard SQL
  that both engines run, `duckdb__` / `postgres__` exist only where the engines differ. See docs/dbt.md
  ("Running on Postgres") for the differences and why.

  cohortflow_try_cast(expression, data_type): text -> data_type, NULL (never an error) when the text is
  not a value of that type. data_type is one of double, decimal, bigint, integer, boolean, timestamp_utc.

    double / decimal / bigint / integer
                               plain decimal numbers with an optional exponent ('12', '-1.5', '2e3');
                               integers round half away from zero ('2.5' -> 3), like DuckDB.
                               decimal is cohortflow_money_type() (macros/money.sql), read from the text
                               exactly (never through a double), rounded half away from zero to 6
                               decimal places; NULL when |x| >= 10^12 after rounding.
    boolean                    true/false, t/f, yes/no, y/n, 1/0, any case, no surrounding blanks.
    timestamp_utc              ISO-8601 date or date-time ('T' or blank), optional fraction, optional
                               Z / UTC / +hh[:mm] offset; converted to UTC, returned as timestamp
                               (no zone). A text without an offset is already UTC.

  DuckDB's try_cast accepts a little more (hex '0x10', '1_000', 'inf', zone names such as
  'Europe/Paris'); Postgres returns NULL for those. Sources that send such values should be cleaned
  at ingest.
-#}
{% macro cohortflow_try_cast(expression, data_type) -%}
  {%- set known = ['double', 'decimal', 'bigint', 'integer', 'boolean', 'timestamp_utc'] -%}
  {%- if data_type not in known -%}
    {{- cohortflow_fail('cohortflow_try_cast(data_type)', "'" ~ data_type ~ "' is not one of " ~ known | join(', ')) -}}
  {%- endif -%}
  {{- return(adapter.dispatch('cohortflow_try_cast', 'cohortflow')(expression, data_type)) -}}
{%- endmacro %}


{% macro duckdb__cohortflow_try_cast(expression, data_type) -%}
  {%- if data_type == 'timestamp_utc' -%}
    {#- The profile sets the session zone to UTC, so a text without an offset is read as UTC. -#}
    timezone('UTC', try_cast({{ expression }} as timestamptz))
  {%- else -%}
    try_cast({{ expression }} as {{ {'double': 'double', 'decimal': cohortflow_money_type()}.get(data_type, data_type) }})
  {%- endif -%}
{%- endmacro %}


{#-
  Postgres has no try_cast (and pg_input_is_valid only from version 16): guard each cast with a
  regular expression so that it cannot fail. Nested CASEs, not AND: Postgres may evaluate the
  operands of AND in any order, but a CASE condition is evaluated before its branch.
-#}
{% macro postgres__cohortflow_try_cast(expression, data_type) -%}
  {%- set number_pattern = "'^ *[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]{1,4})? *$'" -%}
  {%- if data_type == 'double' -%}
    (case when ({{ expression }}) ~ {{ number_pattern }} then
        case when abs(cast({{ expression }} as numeric)) between 1e-307 and 1e308
               or cast({{ expression }} as numeric) = 0
             then cast({{ expression }} as double precision) end end)
  {%- elif data_type == 'decimal' -%}
    (case when ({{ expression }}) ~ {{ number_pattern }} then
        case when abs(round(cast({{ expression }} as numeric), {{ cohortflow_money_scale() }})) < 1000000000000
             then cast(cast({{ expression }} as numeric) as {{ cohortflow_money_type() }}) end end)
  {%- elif data_type in ('bigint', 'integer') -%}
    {%- set limit = '9223372036854775807.5' if data_type == 'bigint' else '2147483647.5' -%}
    (case when ({{ expression }}) ~ {{ number_pattern }} then
        case when abs(cast({{ expression }} as numeric)) < {{ limit }}
             then cast(round(cast({{ expression }} as numeric)) as {{ data_type }}) end end)
  {%- elif data_type == 'boolean' -%}
    (case
        when lower({{ expression }}) in ('true', 't', 'yes', 'y', '1') then true
        when lower({{ expression }}) in ('false', 'f', 'no', 'n', '0') then false
    end)
  {%- else -%}
    {{- postgres__cohortflow_try_cast_timestamp_utc(expression) -}}
  {%- endif -%}
{%- endmacro %}


{% macro postgres__cohortflow_try_cast_timestamp_utc(expression) -%}
  {%- set value = '(' ~ expression ~ ')' -%}
  {#- Shape first; then the ranges a regular expression cannot see (days per month, year 0). -#}
  {%- set shape = "'^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
      ~ "([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]+)?)?"
      ~ " *(Z|UTC|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)?)?$'" -%}
  {%- set has_offset = "'[T ][0-9:.]+ *(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)$'" -%}
  {#- Postgres rounds a fraction beyond microseconds, DuckDB truncates: drop the extra digits. -#}
  {%- set text = "regexp_replace(" ~ value ~ ", '([.][0-9]{6})[0-9]+', '\\1')" -%}
  {%- set year = "cast(substr(" ~ value ~ ", 1, 4) as integer)" -%}
  {%- set month = "cast(substr(" ~ value ~ ", 6, 2) as integer)" -%}
  {%- set day = "cast(substr(" ~ value ~ ", 9, 2) as integer)" -%}
  (case when {{ value }} ~* {{ shape }} then
      case when {{ year }} >= 1
            and {{ day }} <= extract(day from make_date(greatest({{ year }}, 1), {{ month }}, 1)
                                             + interval '1 month' - interval '1 day')
      then
          case when {{ value }} ~* {{ has_offset }}
               then cast({{ text }} as timestamptz) at time zone 'UTC'
               else cast({{ text }} as timestamp)
          end
      end
  end)
{%- endmacro %}
