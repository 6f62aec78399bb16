{#-
  Predictions in the dbt project (docs/predictions.md): each is a table of the source `predictions`
  with config.meta.prediction, written by its Dagster asset (orchestration/predictions.py).

  dbt records dependencies while parsing, before the graph exists, so the marts that union every
  prediction need their names here; cohortflow/declarations.py refuses to load when a declared
  prediction is missing from this list (and says so).
-#}
{% macro prediction_names() -%}
  {{ return(['churn_30d', 'purchase_7d', 'subscribe_7d']) }}
{%- endmacro %}


{#- Every declared prediction's meta (from the graph; only meaningful when `execute`), by name. -#}
{% macro prediction_declarations() -%}
  {%- set found = {} -%}
  {%- if execute -%}
    {%- for source in graph.sources.values() -%}
      {%- set meta = source.config.meta or source.meta or {} -%}
      {%- if source.source_name == 'predictions' and meta.get('prediction') is mapping -%}
        {%- do found.update({source.name: meta['prediction']}) -%}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
  {{ return(found) }}
{%- endmacro %}


{#-
  scores_as_of(prediction): the scores of a prediction's latest scoring run at or before as_of()
  (its table keeps every run, told apart by as_of). A run as of a past date sees that date's scores,
  never later ones; before the first scoring run there are none.
-#}
{% macro scores_as_of(prediction) -%}
  {%- set relation = source('predictions', prediction) -%}
  select * from {{ relation }}
  where as_of = (select max(as_of) from {{ relation }} where as_of <= {{ as_of() }})
{%- endmacro %}


{#-
  had_propensity(prediction, measure='percentile', operator='>=', value=90): the user's current score
  of a prediction — `percentile` (0-100, share of scored users below them) or `probability` (0-1) —
  compared with a number. Amplitude's "had propensity"; a cohort using it is a predictive cohort.
  Only users scored in the prediction's latest run at or before as_of can match (scores_as_of).
-#}
{% macro had_propensity(prediction=none, measure='percentile', operator='>=', value=none) -%}
  {%- set label = "had_propensity(" ~ (prediction | string) ~ ")" -%}
  {%- if prediction is not string or prediction | length == 0 -%}
    {{- cohortflow_fail('had_propensity(prediction)', "needs a prediction name, got " ~ (prediction | string)) -}}
  {%- endif -%}
  {%- if prediction not in prediction_names() -%}
    {%- set close = [] -%}
    {%- for name in prediction_names() -%}{%- if name[:4] == prediction[:4] -%}{%- do close.append(name) -%}{%- endif -%}{%- endfor -%}
    {{- cohortflow_fail('had_propensity(prediction)', "'" ~ prediction ~ "' is not a declared prediction (declared: "
        ~ prediction_names() | join(', ') ~ ")" ~ ((" - did you mean '" ~ close[0] ~ "'?") if close else '')) -}}
  {%- endif -%}
  {%- if measure not in ('percentile', 'probability') -%}
    {{- cohortflow_fail(label ~ " measure", "is 'percentile' (0-100) or 'probability' (0-1), got " ~ (measure | string)) -}}
  {%- endif -%}
  {%- do check_operator(operator, label ~ " operator", comparison_operators()) -%}
  {%- do cohortflow_check_number(value, label ~ " value") -%}
  {%- if value is not number or value is sameas true or value is sameas false -%}
    {{- cohortflow_fail(label ~ " value", "needs a number, got " ~ (value | string)) -}}
  {%- endif -%}
  {%- set upper = 100 if measure == 'percentile' else 1 -%}
  {%- if value < 0 or value > upper -%}
    {{- cohortflow_fail(label ~ " value", measure ~ " runs from 0 to " ~ upper ~ ", got " ~ value) -}}
  {%- endif -%}
  {{- return({'type': 'had_propensity', 'negated': false, 'prediction': prediction, 'measure': measure,
              'operator': operator, 'value': value}) -}}
{%- endmacro %}


{#-
  on-run-start: an empty score table for every prediction not yet scored, so the models that read the
  source `predictions` (the `predictions` union, predictive cohorts) build before a prediction's first
  run, and a plain `dbt build` works on a fresh warehouse. The prediction assets replace the rows;
  an empty table means "not scored yet": its predictive cohorts are empty, not an error.
  Same columns as ml/tables.py SCORE_COLUMNS.
-#}
{% macro ensure_prediction_tables() -%}
  {%- if execute -%}
    {%- set statements = ["create schema if not exists predictions"] -%}
    {%- for name in prediction_names() -%}
      {%- do statements.append(
            "create table if not exists predictions." ~ name ~ " ("
            ~ "prediction_id varchar not null, user_id varchar not null, "
            ~ "probability double precision not null, percentile integer not null, "
            ~ "model_version varchar not null, scored_at timestamp not null, as_of timestamp not null)") -%}
    {%- endfor -%}
    {{ return(statements | join(";\n")) }}
  {%- endif -%}
{%- endmacro %}
