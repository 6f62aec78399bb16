-- Every declared prediction's scores as of this run in one table (what the Profile API and syncs
-- read): per prediction, its latest scoring run at or before as_of (scores_as_of in
-- macros/predictions.sql, which lists the predictions; cohortflow/declarations.py refuses a declared
-- prediction missing from that list).

{% for name in prediction_names() %}
select
    cast(prediction_id as varchar) as prediction_id,
    cast(user_id as varchar) as user_id,
    cast(probability as double precision) as probability,
    cast(percentile as integer) as percentile,
    cast(model_version as varchar) as model_version,
    cast(scored_at as timestamp) as scored_at,
    cast(as_of as timestamp) as as_of
from ({{ scores_as_of(name) }}) as scores
    {% if not loop.last %}
union all
    {% endif %}
{%- endfor %}
