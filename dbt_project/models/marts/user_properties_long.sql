-- user_properties in long form, one row per user and property, every value as text: what the profile
-- API ("get_computations") and syncs that take key / value pairs read. Generated from the contract of
-- user_properties (its YAML), so a new property appears here without being named twice. NULL values
-- are kept as rows, so a property that becomes unknown is a change a sync can see.
{%- set columns = contract_columns('user_properties') | rejectattr('name', 'in', ['user_id', 'computed_at']) | list %}

with user_properties as (

    select * from {{ ref('user_properties') }}

)

{% for column in columns -%}
select
    user_id,
    cast('{{ column.name }}' as varchar) as property,
    {{ property_value_text(column.name, column.data_type) }} as value,
    computed_at
from user_properties
{% if not loop.last %}
union all

{% endif -%}
{%- else -%}
-- While dbt parses there is no graph to read the contract from; this never runs.
select user_id, cast(null as varchar) as property, cast(null as varchar) as value, computed_at
from user_properties
{%- endfor %}
