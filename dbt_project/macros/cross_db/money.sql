{#-
  Exact-decimal arithmetic the same on DuckDB and Postgres (types: macros/money.sql).

    cohortflow_to_money(expression)
        An exact numeric expression (a product, a double from a raw column) as cohortflow_money_type():
        rounded half away from zero to 6 decimal places, NULL when out of range (|x| >= 10^12) or not
        a number. Never an error.

    cohortflow_exact_divide(numerator, denominator, digits=6)
        numerator / denominator rounded half away from zero to `digits` (0..6) decimal places, exactly,
        as cohortflow_money_sum_type(); NULL when the denominator is 0 or NULL. The numerator is an
        exact decimal with at most 6 places (or an integer), the denominator an integer (a count).
        DuckDB divides decimals as doubles and Postgres rounds a quotient to ~16 significant digits,
        so neither `/` is exact: this is integer arithmetic on millionths instead.
        avg(x) = cohortflow_exact_divide('sum(x)', 'count(x)').

    cohortflow_json_number_text(column, key, extracted)
        The text of a JSON number exactly as the source wrote it. `extracted` is what the engine's JSON
        functions returned for `column`'s top-level `key`. Postgres returns the stored text. DuckDB
        reads a JSON number as a double and writes back the shortest text of that double: the same
        digits for any number of at most 15 significant digits (and for any number a program wrote
        from a double), but 123456789012.123456 comes back as 123456789012.12346 and
        999999999999.999999 as 1000000000000.0. So on DuckDB, when that text is long or does not occur
        in the JSON text as written (a cheap substring test: ~1 % of staging's time), the number is
        read from the JSON text itself (a regular expression on `"key":`), and used when it is the
        same number as a double (so a nested key of the same name cannot be mistaken for it).
-#}

{% macro cohortflow_to_money(expression) -%}
  (case when abs(({{ expression }})) < 999999999999.9999995 then cast(({{ expression }}) as {{ cohortflow_money_type() }}) end)
{%- endmacro %}


{% macro cohortflow_exact_divide(numerator, denominator, digits=6) -%}
  {%- if digits is not number or digits != (digits | int) or digits < 0 or digits > cohortflow_money_scale() -%}
    {{- cohortflow_fail('cohortflow_exact_divide(digits)', (digits | string) ~ " is not a whole number from 0 to " ~ cohortflow_money_scale()) -}}
  {%- endif -%}
  {%- set digits = digits | int -%}
  {#- numerator in millionths (an integer), divisor in millionths per unit of the result's last digit -#}
  {%- set unit = '1' ~ ('0' * cohortflow_money_scale()) -%}
  {%- set step = '1' ~ ('0' * (cohortflow_money_scale() - digits)) -%}
  {%- set result_unit = ('0.' ~ ('0' * (digits - 1)) ~ '1') if digits > 0 else '1' -%}
  {{- return(adapter.dispatch('cohortflow_exact_divide', 'cohortflow')(numerator, denominator, digits, unit, step, result_unit)) -}}
{%- endmacro %}


{#- Postgres (and standard SQL with div()): numeric is exact; div() truncates an exact quotient. -#}
{% macro default__cohortflow_exact_divide(numerator, denominator, digits, unit, step, result_unit) -%}
  {%- set millionths = '(cast((' ~ numerator ~ ') as numeric) * ' ~ unit ~ ')' -%}
  {%- set divisor = '(cast((' ~ denominator ~ ') as numeric) * ' ~ step ~ ')' -%}
  (case when ({{ denominator }}) <> 0 then
      cast(sign({{ millionths }}) * div(2 * abs({{ millionths }}) + {{ divisor }}, 2 * {{ divisor }})
           * cast('{{ result_unit }}' as numeric) as {{ cohortflow_money_sum_type() }})
  end)
{%- endmacro %}


{#- DuckDB: `/` on decimals gives a double, so divide 128-bit integers (`//`) and scale back exactly. -#}
{% macro duckdb__cohortflow_exact_divide(numerator, denominator, digits, unit, step, result_unit) -%}
  {%- set millionths = 'cast((' ~ numerator ~ ') * ' ~ unit ~ ' as hugeint)' -%}
  {%- set divisor = '(cast((' ~ denominator ~ ') as hugeint) * ' ~ step ~ ')' -%}
  (case when ({{ denominator }}) <> 0 then
      cast(cast(sign({{ millionths }}) * ((2 * abs({{ millionths }}) + {{ divisor }}) // (2 * {{ divisor }})) as decimal(38, 0))
           * cast('{{ result_unit }}' as decimal(38, {{ digits }})) as {{ cohortflow_money_sum_type() }})
  end)
{%- endmacro %}


{% macro cohortflow_json_number_text(column, key, extracted) -%}
  {{- return(adapter.dispatch('cohortflow_json_number_text', 'cohortflow')(column, key, extracted)) -}}
{%- endmacro %}

{% macro default__cohortflow_json_number_text(column, key, extracted) -%}
  {{- extracted -}}
{%- endmacro %}

{% macro duckdb__cohortflow_json_number_text(column, key, extracted) -%}
  {%- if modules.re.match('^[A-Za-z0-9_]+$', key) is none -%}
    {{- extracted -}}
  {%- else -%}
    {%- set written = "nullif(regexp_extract(cast(" ~ column ~ " as varchar), '\"" ~ key
        ~ "\"\\s*:\\s*(-?[0-9]+(?:[.][0-9]+)?(?:[eE][+-]?[0-9]+)?)', 1), '')" -%}
  (case when length({{ extracted }}) > 15 or not contains(cast({{ column }} as varchar), {{ extracted }})
        then coalesce(case when try_cast({{ written }} as double) = try_cast({{ extracted }} as double) then {{ written }} end, {{ extracted }})
        else {{ extracted }} end)
  {%- endif -%}
{%- endmacro %}
