{#-
  True when `column` falls in the rolling window that ends at as_of: (as_of - amount unit, as_of].

  Half-open on purpose: an event exactly `amount unit` before as_of belongs to the previous window,
  one exactly at as_of belongs to this one, so consecutive windows never count an event twice.
  `unit` is a dbt.dateadd datepart ('hour', 'day', ...). Prefer hours/days over months: see
  profiles.yml about DuckDB's interval bug.
-#}
{% macro is_within_last(column, amount, unit) -%}
  ({{ column }} > {{ dbt.dateadd(unit, -1 * amount, as_of()) }} and {{ column }} <= {{ as_of() }})
{%- endmacro %}
