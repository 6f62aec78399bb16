{#-
  Time windows and property predicates: the vocabulary that cohorts and computed properties share.

  A window is a small dict built by one of the constructors below and rendered to SQL by
  `window_sql`. Every window ends at as_of (nothing after as_of exists for any model) and is
  half-open at its start: (start, as_of]. An event exactly N before as_of belongs to the previous
  window, one exactly at as_of to this one, so consecutive windows never count an event twice.

      last(24, 'hours')                   rolling: (as_of - 24 h, as_of]
      last(30, 'days')                    rolling: (as_of - 30 d, as_of]
      since('2024-01-01')                 [2024-01-01 00:00 UTC, as_of]
      between('2024-01-01', '2024-02-01') [start, end) and never after as_of
      within_first(7, 'days')             [first_seen_at, first_seen_at + 7 d) and never after as_of
      ever()                              everything up to as_of (the default)

  Units: minute(s), hour(s), day(s), week(s). Months are deliberately absent: they are not a fixed
  length, and DuckDB's interval bug (profiles.yml) bites when months and days meet in one SELECT.

  Wrong arguments fail at compile time with a message naming the model and the argument
  (`cohortflow_fail`).
-#}

{% macro cohortflow_fail(argument, message) -%}
  {%- set where = (model.name if model is defined and model is not none and model.name is defined else 'this project') -%}
  {{- exceptions.raise_compiler_error(where ~ ": " ~ argument ~ ": " ~ message) -}}
{%- endmacro %}


{% macro cohortflow_window_unit(unit, argument) -%}
  {%- set units = {'minute': 'minute', 'minutes': 'minute', 'hour': 'hour', 'hours': 'hour',
                   'day': 'day', 'days': 'day', 'week': 'week', 'weeks': 'week'} -%}
  {%- if unit is not string or (unit | lower) not in units -%}
    {{- cohortflow_fail(argument, "unit " ~ (unit | string) ~ " is not one of minutes, hours, days, weeks") -}}
  {%- endif -%}
  {{- return(units[unit | lower]) -}}
{%- endmacro %}


{% macro cohortflow_window_amount(amount, argument) -%}
  {%- if amount is not number or amount != (amount | int) or amount <= 0 -%}
    {{- cohortflow_fail(argument, "amount " ~ (amount | string) ~ " must be a positive whole number") -}}
  {%- endif -%}
  {{- return(amount | int) -}}
{%- endmacro %}


{% macro last(amount, unit='days') -%}
  {{- return({'kind': 'last', 'amount': cohortflow_window_amount(amount, 'last(amount)'),
              'unit': cohortflow_window_unit(unit, 'last(unit)')}) -}}
{%- endmacro %}


{% macro since(start) -%}
  {{- return({'kind': 'since', 'start': parse_utc_timestamp(start ~ '', 'since(start)').strftime('%Y-%m-%d %H:%M:%S')}) -}}
{%- endmacro %}


{% macro between(start, end) -%}
  {%- set start_at = parse_utc_timestamp(start ~ '', 'between(start)') -%}
  {%- set end_at = parse_utc_timestamp(end ~ '', 'between(end)') -%}
  {%- if end_at <= start_at -%}
    {{- cohortflow_fail('between(end)', "end " ~ end ~ " is not after start " ~ start) -}}
  {%- endif -%}
  {{- return({'kind': 'between', 'start': start_at.strftime('%Y-%m-%d %H:%M:%S'),
              'end': end_at.strftime('%Y-%m-%d %H:%M:%S')}) -}}
{%- endmacro %}


{% macro within_first(amount, unit='days') -%}
  {{- return({'kind': 'within_first', 'amount': cohortflow_window_amount(amount, 'within_first(amount)'),
              'unit': cohortflow_window_unit(unit, 'within_first(unit)')}) -}}
{%- endmacro %}


{% macro ever() -%}
  {{- return({'kind': 'ever'}) -}}
{%- endmacro %}


{#- True when a value is a window built by the constructors above. -#}
{% macro is_window(value) -%}
  {{- return(value is mapping and value.get('kind') in ('last', 'since', 'between', 'within_first', 'ever')) -}}
{%- endmacro %}


{#-
  SQL boolean: `column` (a timestamp) lies in `window`. `first_seen_column` names the user's
  first-seen timestamp for within_first windows. Events after as_of are already gone upstream
  (int_events_as_of), but the upper bound is written out so the macro is also right on other inputs.
-#}
{% macro window_sql(window, column, first_seen_column='first_seen_at') -%}
  {%- set window = window if window is not none else ever() -%}
  {%- if not is_window(window) -%}
    {{- cohortflow_fail('within', "expected last(...), since(...), between(...), within_first(...) or ever(), got " ~ (window | string)) -}}
  {%- endif -%}
  {%- if window.kind == 'last' -%}
    ({{ column }} > {{ dbt.dateadd(window.unit, -1 * window.amount, as_of()) }} and {{ column }} <= {{ as_of() }})
  {%- elif window.kind == 'since' -%}
    ({{ column }} >= cast('{{ window.start }}' as timestamp) and {{ column }} <= {{ as_of() }})
  {%- elif window.kind == 'between' -%}
    ({{ column }} >= cast('{{ window.start }}' as timestamp) and {{ column }} < cast('{{ window.end }}' as timestamp) and {{ column }} <= {{ as_of() }})
  {%- elif window.kind == 'within_first' -%}
    ({{ column }} >= {{ first_seen_column }} and {{ column }} < {{ dbt.dateadd(window.unit, window.amount, first_seen_column) }} and {{ column }} <= {{ as_of() }})
  {%- else -%}
    ({{ column }} <= {{ as_of() }})
  {%- endif -%}
{%- endmacro %}


{#- Kept for the first cohorts: (as_of - amount unit, as_of]. Same as window_sql(last(amount, unit), column). -#}
{% macro is_within_last(column, amount, unit) -%}
  {{- window_sql(last(amount, unit), column) -}}
{%- endmacro %}


{#- ---------------------------------------------------------------------------------------------
  Comparison operators and property predicates.

      where('category', '=', 'shoes')          event_properties ->> 'category' = 'shoes'
      where('price', '>=', 50)                 numbers compare as exact decimals (macros/money.sql)
      where('coupon', 'is_null')               also: 'is_not_null'
      where('country', 'in', ['JP', 'KR'])     also: 'not_in'
      where('name', 'contains', 'shirt')       case-insensitive substring

  Typed columns of int_events_as_of (event_at, event_id, user_id, device_id, event_type, session_id,
  item_id, category, price, quantity, revenue, order_id) are used directly; any other name is read from
  event_properties (and must be in the tracking plan: tracking_plan.sql). A number is compared as an exact decimal:
  the literal is written as one (cohortflow_number_literal, at most 6 decimal places, checked here at
  parse time) and a JSON value as cohortflow_try_cast(..., 'decimal') (NULL when not a number).
--------------------------------------------------------------------------------------------- -#}

{% macro comparison_operators() -%}
  {{- return(['=', '!=', '>', '>=', '<', '<=']) -}}
{%- endmacro %}


{% macro check_operator(operator, argument, allowed=none) -%}
  {%- set allowed = allowed if allowed is not none else comparison_operators() -%}
  {%- if operator not in allowed -%}
    {{- cohortflow_fail(argument, "unknown operator '" ~ operator ~ "' (use one of " ~ allowed | join(', ') ~ ")") -}}
  {%- endif -%}
  {{- return(operator) -}}
{%- endmacro %}


{% macro where(property, operator, value=none) -%}
  {%- if property is not string or property | length == 0 -%}
    {{- cohortflow_fail('where(property)', "needs a property name, got " ~ (property | string)) -}}
  {%- endif -%}
  {%- set allowed = comparison_operators() + ['in', 'not_in', 'contains', 'is_null', 'is_not_null'] -%}
  {%- do check_operator(operator, "where('" ~ property ~ "') operator", allowed) -%}
  {%- if operator in ('in', 'not_in') and (value is string or value is not iterable) -%}
    {{- cohortflow_fail("where('" ~ property ~ "') value", "operator " ~ operator ~ " needs a list of values") -}}
  {%- endif -%}
  {%- if operator not in ('is_null', 'is_not_null') and value is none -%}
    {{- cohortflow_fail("where('" ~ property ~ "') value", "operator " ~ operator ~ " needs a value") -}}
  {%- endif -%}
  {%- for v in (value if operator in ('in', 'not_in') else [value]) -%}
    {%- do cohortflow_check_number(v, "where('" ~ property ~ "') value") -%}
  {%- endfor -%}
  {{- return({'property': property, 'operator': operator, 'value': value}) -}}
{%- endmacro %}


{#- SQL literal for a predicate value: numbers as exact numbers (never doubles), everything else as quoted text. -#}
{% macro sql_literal(value) -%}
  {%- if value is sameas true -%}true
  {%- elif value is sameas false -%}false
  {%- elif value is number -%}{{ cohortflow_number_literal(value) }}
  {%- else -%}'{{ (value ~ '') | replace("'", "''") }}'
  {%- endif -%}
{%- endmacro %}


{#-
  The SQL expression of an event property: a typed column when there is one, else JSON text; with
  numeric=true a JSON value is read as an exact decimal (cohortflow_money_type(), NULL when not a number).
  The JSON is parsed once per event: DuckDB's `->>` goes through a double, so a number of more than 15
  significant digits in such a property may lose its last digits there (price / quantity / revenue,
  typed in staging, keep every digit: cohortflow_json_number_text).
-#}
{% macro event_property_sql(property, numeric=false) -%}
  {#- event_at, event_id, user_id, device_id, event_type, session_id, item_id, category, price, quantity,
      revenue, order_id: the typed columns (tracking_plan_builtin_properties, always known to the plan). -#}
  {%- if property in tracking_plan_builtin_properties() -%}{{ property }}
  {%- elif numeric -%}{{ cohortflow_try_cast("(event_properties ->> '" ~ property ~ "')", 'decimal') }}
  {%- else -%}(event_properties ->> '{{ property }}')
  {%- endif -%}
{%- endmacro %}


{#- SQL boolean: all predicates hold (true when there are none). -#}
{% macro predicates_sql(predicates) -%}
  {%- set predicates = predicates or [] -%}
  {%- if predicates is mapping -%}{%- set predicates = [predicates] -%}{%- endif -%}
  {%- if predicates | length == 0 -%}true{%- else -%}
  ({% for p in predicates -%}
    {%- set values = p.value if p.operator in ('in', 'not_in') else [p.value] -%}
    {%- set numeric = values | length > 0 and (values | select('number') | list | length == values | length)
                      and not (values | select('sameas', true) | list) and not (values | select('sameas', false) | list) -%}
    {%- set column = event_property_sql(p.property, numeric) -%}
    {%- if p.operator == 'is_null' -%}{{ column }} is null
    {%- elif p.operator == 'is_not_null' -%}{{ column }} is not null
    {%- elif p.operator in ('in', 'not_in') -%}{{ column }} {{ 'not in' if p.operator == 'not_in' else 'in' }} ({% for v in p.value %}{{ sql_literal(v) }}{{ ', ' if not loop.last }}{% endfor %})
    {%- elif p.operator == 'contains' -%}lower({{ column }}) like '%{{ (p.value ~ '') | lower | replace("'", "''") }}%'
    {%- elif p.operator == '!=' -%}{{ column }} is distinct from {{ sql_literal(p.value) }}
    {%- else -%}{{ column }} {{ p.operator }} {{ sql_literal(p.value) }}
    {%- endif -%}
    {{ ' and ' if not loop.last }}
  {%- endfor %})
  {%- endif -%}
{%- endmacro %}
