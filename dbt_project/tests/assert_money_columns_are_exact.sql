-- Intent: money is exact (macros/money.sql). Every numeric contract column of user_properties and
-- int_user_computed_properties that is not a count is cohortflow_money_sum_type(), on both engines; no
-- contract may declare a double, which would bring float noise back into sums, thresholds and syncs.
{%- set problems = [] -%}
{%- set floating = ['double', 'double precision', 'float', 'float4', 'float8', 'real'] -%}
{%- for model_name in ['user_properties', 'int_user_computed_properties'] -%}
  {%- for column in contract_columns(model_name) -%}
    {%- set declared = column.data_type | lower | trim -%}
    {%- if declared in floating -%}
      {%- do problems.append(model_name ~ '.' ~ column.name ~ ' is ' ~ declared) -%}
    {%- elif (declared.startswith('decimal') or declared.startswith('numeric')) and declared != cohortflow_money_sum_type() -%}
      {%- do problems.append(model_name ~ '.' ~ column.name ~ ' is ' ~ declared ~ ', not ' ~ cohortflow_money_sum_type()) -%}
    {%- endif -%}
  {%- endfor -%}
{%- endfor -%}
{%- set expected = ['revenue_lifetime', 'revenue_90d', 'average_order_value', 'items_purchased_90d', 'max_price_viewed_30d'] -%}
{%- set declared_money = contract_columns('user_properties') | selectattr('data_type', 'equalto', cohortflow_money_sum_type()) | map(attribute='name') | list -%}
{%- if execute -%}
  {%- for name in expected if name not in declared_money -%}
    {%- do problems.append('user_properties.' ~ name ~ ' is not ' ~ cohortflow_money_sum_type()) -%}
  {%- endfor -%}
{%- endif %}
select problem
from (
    select cast(null as varchar) as problem
    {%- for problem in problems %}
    union all select '{{ problem }}'
    {%- endfor %}
) as problems
where problem is not null
