{#-
  The moment a run is computed for ("as of"), as a UTC timestamp literal.

  Every time-relative model calls {{ as_of() }} instead of current_timestamp, so that any past moment
  can be recomputed exactly: `dbt build --vars '{as_of: "2024-03-10T12:00:00Z"}'`.

  Where it comes from: the `as_of` var when given (`--vars`), else $COHORTFLOW_AS_OF (what Dagster
  and `cohortflow run` set), else now.

  Accepted values of the `as_of` var:
    - unset, empty or 'now'            -> the start of this dbt invocation (run_started_at, UTC), so all
                                          models of one run share one moment;
    - 'YYYY-MM-DD'                     -> midnight UTC of that day;
    - 'YYYY-MM-DD HH:MM[:SS[.ffffff]]' -> read as UTC;
    - ISO-8601 with 'T', 'Z' or an offset ('+02:00', '+0200', '-05') -> converted to UTC.
  Anything else fails at compile time with a message naming the var and the value.
-#}
{% macro as_of() -%}
  timestamp '{{ as_of_utc() }}'
{%- endmacro %}


{#- The as_of moment as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC, no zone); also handy in Jinja. -#}
{% macro as_of_utc() -%}
  {%- set value = var('as_of', 'now') -%}
  {#- YAML turns `as_of: 2024-03-10` into a date object; its str() is the ISO text we parse below. -#}
  {%- set text = ('' if value is none else (value ~ '')) | trim -%}
  {#- Orchestration passes the run's as_of in $COHORTFLOW_AS_OF: a var that changes every run would
      make dbt re-parse the whole project each time. An explicit --vars as_of wins over it. -#}
  {%- if text == '' or text | lower == 'now' -%}
    {%- set text = env_var('COHORTFLOW_AS_OF', '') | trim -%}
  {%- endif -%}
  {%- if text == '' or text | lower == 'now' -%}
    {%- set moment = run_started_at.astimezone(modules.pytz.utc).replace(tzinfo=none) -%}
  {%- else -%}
    {%- set moment = parse_utc_timestamp(text, 'as_of') -%}
  {%- endif -%}
  {{- return(moment.strftime('%Y-%m-%d %H:%M:%S.%f')) -}}
{%- endmacro %}


{#-
  Parse an ISO-8601-like text into a naive UTC datetime, or fail naming `var_name` and the value.
  Validated by hand (regex + ranges) because a Python exception inside Jinja would surface as an
  unhelpful traceback instead of a message the user can act on.
-#}
{% macro parse_utc_timestamp(text, var_name) %}
  {%- set pattern = '^([0-9]{4})-([0-9]{2})-([0-9]{2})'
      ~ '(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.]([0-9]{1,9}))?)?)?'
      ~ ' *(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?$' -%}
  {%- set match = modules.re.match(pattern, text, modules.re.IGNORECASE) -%}
  {%- set problem = 'expected now, YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or ISO-8601 such as 2024-03-10T12:00:00Z' -%}
  {%- if match is none -%}
    {{ exceptions.raise_compiler_error(
        "Invalid value for var '" ~ var_name ~ "': '" ~ text ~ "' (" ~ problem ~ ")") }}
  {%- endif -%}

  {%- set parts = match.groups() -%}
  {%- set year = parts[0] | int -%}
  {%- set month = parts[1] | int -%}
  {%- set day = parts[2] | int -%}
  {%- set hour = (parts[3] or '0') | int -%}
  {%- set minute = (parts[4] or '0') | int -%}
  {%- set second = (parts[5] or '0') | int -%}
  {#- Fractions beyond microseconds are truncated, like DuckDB does. -#}
  {%- set microsecond = ((parts[6] or '') ~ '000000')[:6] | int -%}

  {%- set is_valid = year >= 1 and 1 <= month <= 12 and day >= 1
        and hour <= 23 and minute <= 59 and second <= 59 -%}
  {%- if is_valid -%}
    {#- Day 28 exists in every month; four days later is always next month, whose day 1 minus one day ends this one. -#}
    {%- set next_month = modules.datetime.date(year, month, 28) + modules.datetime.timedelta(days=4) -%}
    {%- set days_in_month = (next_month.replace(day=1) - modules.datetime.timedelta(days=1)).day -%}
    {%- set is_valid = day <= days_in_month -%}
  {%- endif -%}

  {%- set offset = parts[7] -%}
  {%- set offset_minutes = 0 -%}
  {%- if is_valid and offset and offset | upper != 'Z' -%}
    {%- set offset_digits = offset[1:] | replace(':', '') -%}
    {%- set offset_hours = offset_digits[:2] | int -%}
    {%- set offset_rest = (offset_digits[2:] or '0') | int -%}
    {%- set is_valid = offset_hours <= 23 and offset_rest <= 59 -%}
    {%- set offset_minutes = (offset_hours * 60 + offset_rest) * (-1 if offset[0] == '-' else 1) -%}
  {%- endif -%}

  {%- if not is_valid -%}
    {{ exceptions.raise_compiler_error(
        "Invalid value for var '" ~ var_name ~ "': '" ~ text ~ "' (not a real date, time or UTC offset; " ~ problem ~ ")") }}
  {%- endif -%}

  {#- Local time minus its offset is UTC: 14:00+02:00 -> 12:00. -#}
  {%- set local = modules.datetime.datetime(year, month, day, hour, minute, second, microsecond) -%}
  {{- return(local - modules.datetime.timedelta(minutes=offset_minutes)) -}}
{% endmacro %}
