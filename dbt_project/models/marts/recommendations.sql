-- Every declared recommendation's lists as of this run in one table (what the Profile API and syncs
-- read): per recommendation, its latest run at or before as_of (recommendations_as_of in
-- macros/recommendations.sql).

{% for name in recommendation_names() %}
select
    cast(rec_id as varchar) as rec_id,
    cast(user_id as varchar) as user_id,
    cast(rank as integer) as rank,
    cast(item_id as varchar) as item_id,
    cast(score as double precision) as score,
    cast(is_control as boolean) as is_control,
    cast(source as varchar) as source,
    cast(model_version as varchar) as model_version,
    cast(generated_at as timestamp) as generated_at,
    cast(as_of as timestamp) as as_of
from ({{ recommendations_as_of(name) }}) as lists
    {% if not loop.last %}
union all
    {% endif %}
{%- endfor %}
