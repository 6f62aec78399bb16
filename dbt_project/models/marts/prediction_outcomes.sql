-- The outcome of every declared prediction (models/predictions/_predictions__sources.yml), as days:
-- one row per prediction, user and UTC day on which the user performed the prediction's outcome
-- event (with its property filters; for does_not_perform, the event whose absence is the goal).
-- The prediction assets label a training cutoff c with "any such day in [c, c + horizon)": an event
-- at exactly c belongs to the period after c, as in marts.prediction_features. Cut at as_of, so a
-- horizon that has not fully passed by as_of is never used as a label (ml/examples.py).
-- depends_on: {{ ref('int_events_as_of') }}

{%- set declarations = prediction_declarations() %}
{%- set selects = [] %}
{%- for name, spec in declarations | dictsort %}
  {%- set outcome = spec.get('outcome') or {} %}
  {%- set event = outcome.get('performs') or outcome.get('does_not_perform') %}
  {%- set predicates = [] %}
  {%- for p in outcome.get('where') or [] %}
    {%- do predicates.append({'property': p.property, 'operator': p.get('operator', '='), 'value': p.get('value')}) %}
  {%- endfor %}
  {%- do selects.append(
"    select
        cast(" ~ sql_string(name) ~ " as varchar) as prediction_id,
        user_id,
        cast(event_at as date) as outcome_date,
        count(*) as outcome_events,
        min(event_at) as first_outcome_at,
        max(event_at) as last_outcome_at
    from " ~ ref('int_events_as_of') ~ "
    where user_id is not null
      and " ~ ("true" if event == 'any_event' else "event_type = " ~ sql_literal(event)) ~ "
      and " ~ predicates_sql(predicates) ~ "
    group by user_id, cast(event_at as date)") %}
{%- endfor %}

{%- if selects %}
{{ selects | join("\n\n    union all\n\n") }}
{%- else %}
-- No prediction is declared: an empty table of the right shape.
select
    cast(null as varchar) as prediction_id,
    cast(null as varchar) as user_id,
    cast(null as date) as outcome_date,
    cast(null as bigint) as outcome_events,
    cast(null as timestamp) as first_outcome_at,
    cast(null as timestamp) as last_outcome_at
where false
{%- endif %}
