-- One row per scored user with each prediction's probability and percentile side by side: the
-- shape a destination's user attributes want (e.g. Braze: purchase_7d_probability = 0.31).
-- A user outside a prediction's starting cohort has NULLs for it.

with scores as (

    select * from {{ ref('predictions') }}

)

select
    user_id,
{%- for name in prediction_names() %}
    max(probability) filter (where prediction_id = {{ sql_string(name) }}) as {{ name }}_probability,
    max(percentile) filter (where prediction_id = {{ sql_string(name) }}) as {{ name }}_percentile,
{%- endfor %}
    max(scored_at) as scored_at

from scores
group by user_id
