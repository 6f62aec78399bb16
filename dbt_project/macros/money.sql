{#-
  Exact numbers. Money, prices and quantities are exact decimals end to end (staging, intermediate
  models, properties, cohorts, user_properties, syncs), never doubles: 0.1 + 0.2 is 0.3. The types are
  named here, once, so DuckDB and Postgres declare the same precision (docs/properties.md, "Numbers").

    cohortflow_money_scale()      6: every amount has exactly 6 decimal places. Online Retail's unit
                                  prices have up to 3 (0.001); 6 leaves room for sub-cent prices.
    cohortflow_money_type()       decimal(18, 6): one event's amount (price, quantity, revenue, a JSON
                                  number read by the property / cohort language); |x| < 10^12.
                                  64-bit on DuckDB, so per-event work stays as cheap as with doubles.
    cohortflow_money_sum_type()   decimal(38, 6): sums, averages and every money column of
                                  user_properties; |x| < 10^32 (128-bit on DuckDB, used per user).

  Input with more than 6 decimal places is rounded half away from zero (what a cast does on both
  engines); a value out of range, or text that is not a number, is NULL.

  Literals: cohortflow_number_literal(value) writes a threshold of a cohort or a filter as an exact
  decimal of the same type (`cast('0.3' as decimal(18, 6))`), never as a double, and refuses one with
  more than 6 decimal places (it could not be compared exactly): the constructors call
  cohortflow_check_number at parse time, so the message names the model and the argument.
-#}

{% macro cohortflow_money_scale() -%}
  {{- return(6) -}}
{%- endmacro %}


{% macro cohortflow_money_type() -%}
  {{- return('decimal(18, ' ~ cohortflow_money_scale() ~ ')') -}}
{%- endmacro %}


{% macro cohortflow_money_sum_type() -%}
  {{- return('decimal(38, ' ~ cohortflow_money_scale() ~ ')') -}}
{%- endmacro %}


{#-
  A Jinja number as plain decimal text without exponent or trailing zeros: 0.3 -> '0.3', 1e-05 ->
  '0.00001', 1000.0 -> '1000', 2.5e+20 -> '250000000000000000000'. A float is read from its shortest
  repr (Python's str), so 0.30000000000000004 stays 0.30000000000000004. none for inf / nan.
-#}
{% macro cohortflow_number_text(value) -%}
  {%- set text = (value | string) | lower -%}
  {%- if text in ('inf', '-inf', 'nan', '-nan') -%}{{- return(none) -}}{%- endif -%}
  {%- set negative = text.startswith('-') -%}
  {%- set text = text.lstrip('-+') -%}
  {%- if 'e' in text -%}
    {%- set mantissa = text.split('e')[0] -%}
    {%- set exponent = text.split('e')[1] | int -%}
    {%- set whole = mantissa.split('.')[0] -%}
    {%- set fraction = mantissa.split('.')[1] if '.' in mantissa else '' -%}
    {%- set digits = whole ~ fraction -%}
    {%- set point = (whole | length) + exponent -%}
    {%- if point <= 0 -%}
      {%- set text = '0.' ~ ('0' * (0 - point)) ~ digits -%}
    {%- elif point >= (digits | length) -%}
      {%- set text = digits ~ ('0' * (point - (digits | length))) -%}
    {%- else -%}
      {%- set text = digits[:point] ~ '.' ~ digits[point:] -%}
    {%- endif -%}
  {%- endif -%}
  {%- if '.' in text -%}
    {%- set text = text.rstrip('0').rstrip('.') -%}
  {%- endif -%}
  {%- set text = text.lstrip('0') -%}
  {%- if text == '' or text.startswith('.') -%}{%- set text = '0' ~ text -%}{%- endif -%}
  {{- return(('-' if negative and text != '0' else '') ~ text) -}}
{%- endmacro %}


{#- Fail (naming `argument`) unless `value` is a finite number with at most cohortflow_money_scale() decimals. -#}
{% macro cohortflow_check_number(value, argument) -%}
  {%- if value is number and not (value is sameas true or value is sameas false) -%}
    {%- set text = cohortflow_number_text(value) -%}
    {%- if text is none -%}
      {{- cohortflow_fail(argument, (value | string) ~ " is not a finite number") -}}
    {%- endif -%}
    {%- if '.' in text and (text.split('.')[1] | length) > cohortflow_money_scale() -%}
      {{- cohortflow_fail(argument, text ~ " has more than " ~ cohortflow_money_scale()
          ~ " decimal places; numbers are compared as exact decimals with " ~ cohortflow_money_scale()) -}}
    {%- endif -%}
    {%- if '.' in text and (text.split('.')[0].lstrip('-') | length) > 32 -%}
      {{- cohortflow_fail(argument, text ~ " is out of range (at most 32 digits before the decimal point)") -}}
    {%- endif -%}
  {%- endif -%}
{%- endmacro %}


{#-
  SQL for a number in a comparison: a whole number as an integer literal (exact on both engines), any
  other as an exact decimal of the money type (the sum type beyond 10^12). Never a double.
-#}
{% macro cohortflow_number_literal(value, argument='value') -%}
  {%- do cohortflow_check_number(value, argument) -%}
  {%- set text = cohortflow_number_text(value) -%}
  {%- if '.' not in text -%}
    {{- text -}}
  {%- else -%}
    {%- set type = cohortflow_money_type() if (text.split('.')[0].lstrip('-') | length) <= 12 else cohortflow_money_sum_type() -%}
    cast('{{ text }}' as {{ type }})
  {%- endif -%}
{%- endmacro %}
