-- Intent: the event seeds stand for int_events_as_of, so their price / quantity / revenue must have the
-- main project's exact type (cohortflow_money_type(), macros/money.sql): with doubles the unit tests'
-- 0.1 + 0.2 would not be 0.3 and would test something the real project never computes.
{%- set mismatches = [] -%}
{%- if execute -%}
  {%- for node in graph.nodes.values() if node.resource_type == 'seed' and node.name in ('cohort_events', 'property_events') -%}
    {%- for column in ['price', 'quantity', 'revenue'] -%}
      {%- set declared = node.config.column_types.get(column) -%}
      {%- if declared != cohortflow_money_type() -%}
        {%- do mismatches.append(node.name ~ '.' ~ column ~ ' is ' ~ (declared | string) ~ ', not ' ~ cohortflow_money_type()) -%}
      {%- endif -%}
    {%- endfor -%}
  {%- endfor -%}
{%- endif %}
select problem
from (
    select cast(null as varchar) as problem
    {%- for mismatch in mismatches %}
    union all select '{{ mismatch }}'
    {%- endfor %}
) as problems
where problem is not null
