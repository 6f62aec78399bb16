-- One row per user with each recommendation's top five item ids side by side: the shape a
-- destination's user attributes want (e.g. Braze: products_for_you_top5 = "A1,B7,C3,D2,E9").

with lists as (

    select * from {{ ref('recommendations') }}

)

select
    user_id,
{%- for name in recommendation_names() %}
    string_agg(item_id, ',' order by rank) filter (where rec_id = {{ sql_string(name) }} and rank <= 5)
        as {{ name }}_top5,
    bool_or(is_control) filter (where rec_id = {{ sql_string(name) }}) as {{ name }}_is_control,
{%- endfor %}
    max(generated_at) as generated_at

from lists
group by user_id
