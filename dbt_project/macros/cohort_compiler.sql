{#-
  cohort(all_of=[...]): compiles an AND of conditions / any_of groups (cohort_conditions.sql) into one
  portable SELECT with exactly two columns, `user_id` (one row per member) and `entered_at`.

  Shape of the SQL: one CTE chain per condition, each ending in (user_id, matched_at) for the users
  for whom the condition holds at as_of, plus when it became true; OR-groups union their conditions
  (earliest matched_at); the AND joins the positive clauses and anti-joins the negated ones.

  entered_at, per member: the latest matched_at of the positive clauses (the moment the last of them
  became true). A cohort of exclusions only (every clause negated) takes the user's first_seen_at.
  matched_at per condition kind (docs/cohorts.md has the table):
    performed, at-least style comparisons (count >= 3): the event at which the running measure in
        the window first satisfied the comparison (the 3rd event, the day revenue crossed 500 ...);
    performed, comparisons that hold at zero (count < 3, count = 0, != 2): the start of the window
        (or first_seen_at when later), since the condition has held from then;
    performed with nth_time(n): the Nth occurrence;
    had_been_new: first_seen_at;  sequence: the first completion (after the last then_not event);
    user_property: when the latest value was set (most_recent), the first matching update in the
        window (any_in_window);  computed_property: the user's last event (when the value last
        could change), else first_seen_at;  in_cohort: that cohort's entered_at;
    in_uploaded_cohort: when the user was added to the uploaded cohort (int_uploaded_cohort_members);
    had_propensity: the as_of of the scoring run that gave the score;
    a negated condition inside any_of: first_seen_at.

  Inputs are model names so that the macro-test project can feed seeds; only the models a cohort
  needs are ref'd (dbt then knows the exact dependencies, and unit tests need only those inputs).

  The compiled spec is also written to the model's config.meta.cohort_definition (Amplitude's
  andClauses / orClauses shape) so marts.cohorts and `dbt docs` can show it.
-#}
{% macro cohort(all_of=none, events='int_events_as_of', users='int_users_seen',
                attributes='int_user_attribute_updates', properties='user_properties',
                uploaded='int_uploaded_cohort_members') -%}
  {%- if all_of is none or all_of is string or all_of is mapping or all_of is not iterable or all_of | length == 0 -%}
    {{- cohortflow_fail('cohort(all_of)', "needs a non-empty list of conditions, got " ~ (all_of | string)) -}}
  {%- endif -%}

  {#- Normalise to AND-clauses of OR-lists, Amplitude's shape: a bare negated condition becomes a
      negated clause around its positive form. -#}
  {%- set clauses = [] -%}
  {%- for item in all_of -%}
    {%- if item is mapping and item.get('type') == 'any_of' -%}
      {%- do clauses.append({'negated': item.negated, 'orClauses': item.conditions}) -%}
    {%- elif cohortflow_is_condition(item) -%}
      {%- do clauses.append({'negated': item.negated, 'orClauses': [negate(item) if item.negated else item]}) -%}
    {%- else -%}
      {{- cohortflow_fail('cohort(all_of)', "item " ~ loop.index ~ " is not a condition or any_of(...): " ~ (item | string)) -}}
    {%- endif -%}
  {%- endfor -%}
  {%- do config(meta={'cohort_definition': {'andClauses': clauses}}) -%}
  {#- Every event type and property named must be in the tracking plan (tracking_plan.sql; compile time only). -#}
  {%- do tracking_plan_check_cohort(clauses) -%}

  {%- set ctx = {'events': events, 'users': users, 'attributes': attributes, 'properties': properties, 'uploaded': uploaded} -%}
  {%- set positive = clauses | rejectattr('negated') | list -%}
  {%- set state = namespace(needs_users=(positive | length == 0)) -%}
  {%- for clause in clauses -%}
    {%- for condition in clause.orClauses -%}
      {%- if condition.negated or cohortflow_condition_needs_users(condition) -%}{%- set state.needs_users = true -%}{%- endif -%}
    {%- endfor -%}
  {%- endfor -%}

  {%- set ctes = [] -%}
  {%- if state.needs_users -%}
    {%- do ctes.append("cohort_users as (\n    select user_id, first_seen_at, last_seen_at\n    from " ~ ref(users) ~ "\n)") -%}
  {%- endif -%}

  {%- for clause in clauses -%}
    {%- set clause_index = loop.index -%}
    {%- set branches = [] -%}
    {%- for condition in clause.orClauses -%}
      {%- set name = 'condition_' ~ clause_index ~ '_' ~ loop.index -%}
      {%- set positive_condition = negate(condition) if condition.negated else condition -%}
      {%- do ctes.append(cohortflow_condition_ctes(positive_condition, name, ctx)) -%}
      {%- if condition.negated -%}
        {%- do branches.append("select cohort_users.user_id, cohort_users.first_seen_at as matched_at\n    from cohort_users\n    where not exists (select 1 from " ~ name ~ " where " ~ name ~ ".user_id = cohort_users.user_id)") -%}
      {%- else -%}
        {%- do branches.append("select user_id, matched_at from " ~ name) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if branches | length == 1 and not clause.orClauses[0].negated -%}
      {%- do ctes.append("clause_" ~ clause_index ~ " as (\n    select user_id, matched_at from condition_" ~ clause_index ~ "_1\n)") -%}
    {%- else -%}
      {%- do ctes.append("clause_" ~ clause_index ~ " as (\n    -- any of: the earliest branch that holds\n    select user_id, min(matched_at) as matched_at\n    from (\n    "
            ~ branches | join("\n    union all\n    ") ~ "\n    ) as branches\n    group by user_id\n)") -%}
    {%- endif -%}
  {%- endfor %}

with
{{ ctes | join(",\n\n") }}

{#- The AND: positive clauses joined, negated ones anti-joined (exclusions win over everything). #}
{%- set ns = namespace(base=none, entered=[], joins=[], excludes=[]) -%}
{%- for clause in clauses -%}
  {%- set clause_name = 'clause_' ~ loop.index -%}
  {%- if clause.negated -%}
    {%- do ns.excludes.append(clause_name) -%}
  {%- elif ns.base is none -%}
    {%- set ns.base = clause_name -%}
    {%- do ns.entered.append(clause_name ~ '.matched_at') -%}
  {%- else -%}
    {%- do ns.joins.append(clause_name) -%}
    {%- do ns.entered.append(clause_name ~ '.matched_at') -%}
  {%- endif -%}
{%- endfor -%}
{%- if ns.base is none -%}
  {%- set ns.base = 'cohort_users' -%}
  {%- do ns.entered.append('cohort_users.first_seen_at') -%}
{%- endif %}

select
    cast({{ ns.base }}.user_id as varchar) as user_id,
    cast({% if ns.entered | length == 1 %}{{ ns.entered[0] }}{% else %}greatest({{ ns.entered | join(', ') }}){% endif %} as timestamp) as entered_at

from {{ ns.base }}
{%- for clause_name in ns.joins %}
inner join {{ clause_name }} on {{ clause_name }}.user_id = {{ ns.base }}.user_id
{%- endfor %}
where true
{%- for clause_name in ns.excludes %}
  and not exists (select 1 from {{ clause_name }} where {{ clause_name }}.user_id = {{ ns.base }}.user_id)
{%- endfor %}
{% endmacro %}


{#- Whether a condition's SQL reads cohort_users (first_seen_at, or users without events). -#}
{% macro cohortflow_condition_needs_users(c) -%}
  {%- set within_first = c.get('within') is mapping and c.within.kind == 'within_first' -%}
  {%- if c.type == 'performed' -%}
    {{- return(within_first or (c.measure.kind != 'nth_time' and cohortflow_compare(0, c.operator, c.value))) -}}
  {%- elif c.type == 'sequence' -%}{{- return(within_first) -}}
  {%- elif c.type == 'user_property' -%}{{- return(within_first or c.operator == 'is_null') -}}
  {%- elif c.type in ('in_cohort', 'in_uploaded_cohort', 'had_propensity') -%}{{- return(false) -}}
  {%- else -%}{{- return(true) -}}
  {%- endif -%}
{%- endmacro %}


{#- a <op> b, evaluated in Jinja (to know at compile time whether users without events match). -#}
{% macro cohortflow_compare(a, operator, b) -%}
  {%- if operator == '=' -%}{{- return(a == b) -}}
  {%- elif operator == '!=' -%}{{- return(a != b) -}}
  {%- elif operator == '>' -%}{{- return(a > b) -}}
  {%- elif operator == '>=' -%}{{- return(a >= b) -}}
  {%- elif operator == '<' -%}{{- return(a < b) -}}
  {%- else -%}{{- return(a <= b) -}}
  {%- endif -%}
{%- endmacro %}


{#- The moment a window starts for a user (for conditions that hold from the window's start). -#}
{% macro cohortflow_window_start_sql(window, first_seen_column) -%}
  {%- if window.kind == 'last' -%}
    least({{ as_of() }}, greatest({{ dbt.dateadd(window.unit, -1 * window.amount, as_of()) }}, {{ first_seen_column }}))
  {%- elif window.kind in ('since', 'between') -%}
    least({{ as_of() }}, greatest(cast('{{ window.start }}' as timestamp), {{ first_seen_column }}))
  {%- else -%}
    {{ first_seen_column }}
  {%- endif -%}
{%- endmacro %}


{#- event_type filter: [] means any event. -#}
{% macro cohortflow_event_type_sql(events) -%}
  {%- if events | length == 0 -%}true
  {%- elif events | length == 1 -%}event_type = {{ sql_literal(events[0]) }}
  {%- else -%}event_type in ({% for e in events %}{{ sql_literal(e) }}{{ ', ' if not loop.last }}{% endfor %})
  {%- endif -%}
{%- endmacro %}


{#- FROM clause over the events, with first_seen_at joined in when a within_first window needs it. -#}
{% macro cohortflow_events_from_sql(ctx, window) -%}
  {%- if window.kind == 'within_first' -%}
    (select events.*, cohort_users.first_seen_at
     from {{ ref(ctx.events) }} as events
     inner join cohort_users on cohort_users.user_id = events.user_id) as events
  {%- else -%}
    {{ ref(ctx.events) }} as events
  {%- endif -%}
{%- endmacro %}


{% macro cohortflow_condition_ctes(c, name, ctx) -%}
  {%- if c.type == 'performed' -%}{{- return(cohortflow_performed_ctes(c, name, ctx)) -}}
  {%- elif c.type == 'had_been_new' -%}
    {{- return(name ~ " as (\n    -- had been new: first seen in the window\n    select user_id, first_seen_at as matched_at\n    from cohort_users\n    where "
        ~ window_sql(c.within, 'first_seen_at') ~ "\n)") -}}
  {%- elif c.type == 'sequence' -%}{{- return(cohortflow_sequence_ctes(c, name, ctx)) -}}
  {%- elif c.type == 'user_property' -%}{{- return(cohortflow_user_property_ctes(c, name, ctx)) -}}
  {%- elif c.type == 'computed_property' -%}
    {{- return(name ~ " as (\n    -- computed property " ~ c.column ~ " (marts.user_properties at as_of)\n"
        ~ "    select cohort_users.user_id, coalesce(cohort_users.last_seen_at, cohort_users.first_seen_at) as matched_at\n"
        ~ "    from " ~ ref(ctx.properties) ~ " as user_properties\n"
        ~ "    inner join cohort_users on cohort_users.user_id = user_properties.user_id\n"
        ~ "    where " ~ cohortflow_value_predicate_sql('user_properties.' ~ c.column, c.operator, c.value, false, "computed_property('" ~ c.column ~ "')") ~ "\n)") -}}
  {%- elif c.type == 'in_cohort' -%}
    {{- return(name ~ " as (\n    select user_id, entered_at as matched_at\n    from " ~ ref(c.cohort) ~ "\n)") -}}
  {%- elif c.type == 'in_uploaded_cohort' -%}
    {{- return(name ~ " as (\n    -- in the uploaded cohort " ~ c.cohort_id ~ "\n    select user_id, entered_at as matched_at\n    from "
        ~ ref(ctx.uploaded) ~ "\n    where cohort_id = " ~ sql_literal(c.cohort_id) ~ "\n)") -}}
  {%- elif c.type == 'had_propensity' -%}
    {{- return(name ~ " as (\n    -- had propensity: " ~ c.prediction ~ " " ~ c.measure ~ " " ~ c.operator ~ " " ~ c.value ~ " (its last scoring run)\n"
        ~ "    select user_id, as_of as matched_at\n    from (" ~ scores_as_of(c.prediction) ~ ") as scores\n"
        ~ "    where " ~ c.measure ~ " " ~ c.operator ~ " " ~ sql_literal(c.value) ~ "\n)") -}}
  {%- endif -%}
{%- endmacro %}


{#- performed(...): count / total / distinct / on_distinct_days compared with a number, or nth_time. -#}
{% macro cohortflow_performed_ctes(c, name, ctx) -%}
  {%- if performed_reads_daily_state(c, ctx) -%}
    {#- The same values from the per-day state (macros/daily_state.sql): stored days + edge-day events. -#}
    {%- set state_ctes = cohortflow_performed_state_ctes(c, name, ctx) -%}
    {{- return(state_ctes if c.measure.kind == 'nth_time' else state_ctes ~ ",\n\n" ~ cohortflow_performed_final_cte(c, name)) -}}
  {%- endif -%}
  {%- set m = c.measure -%}
  {%- set label = "performed(" ~ (c.events | join(', ') or '*') ~ ")" -%}
  {%- set inputs = {'count': '1', 'on_distinct_days': 'cast(event_at as date)'} -%}
  {%- if m.kind == 'total' -%}{%- do inputs.update({'total': event_property_sql(m.property, true)}) -%}
  {%- elif m.kind == 'distinct' -%}{%- do inputs.update({'distinct': event_property_sql(m.property)}) -%}
  {%- endif -%}
  {%- set first_seen = 'first_seen_at' if c.within.kind == 'within_first' else 'null' -%}

  {%- if m.kind == 'nth_time' -%}
{{ name }}_events as (
    -- {{ label }}: every matching occurrence up to as_of, numbered per user
    select
        user_id,
        event_at,
        {{ first_seen }} as first_seen_at,
        row_number() over (partition by user_id order by event_at, event_id) as occurrence
    from {{ cohortflow_events_from_sql(ctx, c.within) }}
    where {{ cohortflow_event_type_sql(c.events) }}
      and {{ predicates_sql(c.where) }}
      and event_at <= {{ as_of() }}
),

{{ name }} as (
    -- the {{ m.n }}th time fell in the window
    select user_id, event_at as matched_at
    from {{ name }}_events
    where occurrence = {{ m.n }}
      and {{ window_sql(c.within, 'event_at') }}
)
  {%- else -%}
  {%- set holds_at_zero = cohortflow_compare(0, c.operator, c.value) -%}
  {%- set at_least_one = (c.operator == '>=' and c.value <= 1) or (c.operator == '>' and c.value < 1) -%}
  {%- set needs_running = not holds_at_zero and not (at_least_one and m.kind != 'total') -%}
  {%- set final = {'count': 'count(*)', 'total': 'coalesce(sum(measure_input), 0)',
                   'distinct': 'count(distinct measure_input)', 'on_distinct_days': 'count(distinct measure_input)'}[m.kind] -%}
{{ name }}_events as (
    -- {{ label }} in the window
    select
        user_id,
        event_at,
        event_id,
        {{ inputs[m.kind] }} as measure_input
    from {{ cohortflow_events_from_sql(ctx, c.within) }}
    where {{ cohortflow_event_type_sql(c.events) }}
      and {{ predicates_sql(c.where) }}
      and {{ window_sql(c.within, 'event_at') }}
),
  {%- if needs_running %}

{{ name }}_numbered as (
    select
        user_id,
        event_at,
        event_id,
        measure_input,
        -- 1 on the first event of each distinct value: their running sum is the running distinct count
        case
            when measure_input is not null
             and row_number() over (partition by user_id, measure_input order by event_at, event_id) = 1
            then 1 else 0
        end as is_first_of_value
    from {{ name }}_events
),

{{ name }}_running as (
    -- the measure as it grew, event by event: when did it first satisfy {{ c.operator }} {{ c.value }}?
    select
        user_id,
        event_at,
        measure_input,
        {%- if m.kind == 'count' %}
        row_number() over (partition by user_id order by event_at, event_id) as running_value
        {%- elif m.kind == 'total' %}
        sum(measure_input) over (partition by user_id order by event_at, event_id rows between unbounded preceding and current row) as running_value
        {%- else %}
        sum(is_first_of_value) over (partition by user_id order by event_at, event_id rows between unbounded preceding and current row) as running_value
        {%- endif %}
    from {{ name }}_numbered
),
  {%- endif %}

{{ name }}_per_user as (
    select
        user_id,
        {{ final }} as measure_value,
        {%- if needs_running %}
        min(event_at) filter (where running_value {{ c.operator }} {{ sql_literal(c.value) }}) as reached_at,
        {%- elif m.kind in ('distinct', 'total') %}
        min(event_at) filter (where measure_input is not null) as reached_at,
        {%- else %}
        min(event_at) as reached_at,
        {%- endif %}
        max(event_at) as last_event_at
    from {{ name }}_{{ 'running' if needs_running else 'events' }}
    group by user_id
),

{{ cohortflow_performed_final_cte(c, name) }}
  {%- endif -%}
{%- endmacro %}


{#-
  The last CTE of performed(...): `<name>` (user_id, matched_at) from `<name>_per_user` (user_id,
  measure_value, reached_at, last_event_at), whichever way the per-user values were read.
-#}
{% macro cohortflow_performed_final_cte(c, name) -%}
  {%- set holds_at_zero = cohortflow_compare(0, c.operator, c.value) -%}
{{ name }} as (
  {%- if holds_at_zero %}
    -- {{ c.operator }} {{ c.value }} holds with no events too: every known user whose measure still satisfies it,
    -- true since the window started for them
    select
        cohort_users.user_id,
        {{ cohortflow_window_start_sql(c.within, 'cohort_users.first_seen_at') }} as matched_at
    from cohort_users
    left join {{ name }}_per_user as per_user on per_user.user_id = cohort_users.user_id
    where coalesce(per_user.measure_value, 0) {{ c.operator }} {{ sql_literal(c.value) }}
  {%- else %}
    select user_id, coalesce(reached_at, last_event_at) as matched_at
    from {{ name }}_per_user
    where measure_value {{ c.operator }} {{ sql_literal(c.value) }}
  {%- endif %}
)
{%- endmacro %}


{#-
  sequence(steps): for each step k and each of its events, the latest moment a chain of steps 1..k
  could have started (latest start = shortest chain, which is what a completed_within limit needs).
  Step k's event continues chains that reached step k-1 strictly earlier. Computed with a running max
  over one row per (user, moment), so "strictly earlier" is the previous row.
-#}
{% macro cohortflow_sequence_ctes(c, name, ctx) -%}
  {%- set parts = [] -%}
  {%- for s in c.steps -%}
    {%- do parts.append(name ~ "_step_" ~ loop.index ~ " as (\n    -- step " ~ loop.index ~ ": " ~ (s.events | join(', ') or 'any event') ~ "\n    select user_id, event_at\n    from "
        ~ cohortflow_events_from_sql(ctx, c.within) ~ "\n    where " ~ cohortflow_event_type_sql(s.events) ~ "\n      and " ~ predicates_sql(s.where)
        ~ "\n      and " ~ window_sql(c.within, 'event_at') ~ "\n)") -%}
  {%- endfor -%}
  {%- do parts.append(name ~ "_reach_1 as (\n    select user_id, event_at, event_at as started_at\n    from " ~ name ~ "_step_1\n)") -%}
  {%- for s in c.steps[1:] -%}
    {%- set k = loop.index + 1 -%}
    {%- do parts.append(name ~ "_points_" ~ k ~ " as (\n"
        ~ "    -- one row per (user, moment): the latest start of chains that reached step " ~ (k - 1) ~ " then, and whether step " ~ k ~ " happened then\n"
        ~ "    select user_id, event_at, max(started_at) as started_at, max(is_step) as is_step\n"
        ~ "    from (\n"
        ~ "        select user_id, event_at, started_at, 0 as is_step from " ~ name ~ "_reach_" ~ (k - 1) ~ "\n"
        ~ "        union all\n"
        ~ "        select user_id, event_at, cast(null as timestamp) as started_at, 1 as is_step from " ~ name ~ "_step_" ~ k ~ "\n"
        ~ "    ) as points\n"
        ~ "    group by user_id, event_at\n)") -%}
    {%- do parts.append(name ~ "_reach_" ~ k ~ " as (\n"
        ~ "    select user_id, event_at, started_at\n"
        ~ "    from (\n"
        ~ "        select\n"
        ~ "            user_id,\n"
        ~ "            event_at,\n"
        ~ "            is_step,\n"
        ~ "            max(started_at) over (partition by user_id order by event_at rows between unbounded preceding and 1 preceding) as started_at\n"
        ~ "        from " ~ name ~ "_points_" ~ k ~ "\n"
        ~ "    ) as continued\n"
        ~ "    where is_step = 1 and started_at is not null\n)") -%}
  {%- endfor -%}
  {%- set last_reach = name ~ "_reach_" ~ (c.steps | length) -%}
  {%- set limit_sql = 'true' -%}
  {%- if c.completed_within is not none -%}
    {%- set limit_sql = 'completed.event_at <= ' ~ dbt.dateadd(c.completed_within.unit, c.completed_within.amount, 'completed.started_at') -%}
  {%- endif -%}
  {%- if c.then_not is not none -%}
    {%- do parts.append(name ~ "_then_not as (\n    -- then not: " ~ (c.then_not.events | join(', ') or 'any event') ~ "; only its last occurrence matters\n    select user_id, max(event_at) as last_excluded_at\n    from "
        ~ cohortflow_events_from_sql(ctx, c.within) ~ "\n    where " ~ cohortflow_event_type_sql(c.then_not.events) ~ "\n      and " ~ predicates_sql(c.then_not.where)
        ~ "\n      and " ~ window_sql(c.within, 'event_at') ~ "\n    group by user_id\n)") -%}
    {%- do parts.append(name ~ " as (\n    -- the first completion after the last then_not event\n    select completed.user_id, min(completed.event_at) as matched_at\n    from " ~ last_reach ~ " as completed\n"
        ~ "    left join " ~ name ~ "_then_not as excluded on excluded.user_id = completed.user_id\n"
        ~ "    where (excluded.last_excluded_at is null or completed.event_at > excluded.last_excluded_at)\n      and " ~ limit_sql ~ "\n    group by completed.user_id\n)") -%}
  {%- else -%}
    {%- do parts.append(name ~ " as (\n    select completed.user_id, min(completed.event_at) as matched_at\n    from " ~ last_reach ~ " as completed\n    where "
        ~ limit_sql ~ "\n    group by completed.user_id\n)") -%}
  {%- endif -%}
  {{- return(parts | join(",\n\n")) -}}
{%- endmacro %}


{#- user_property(...): attribute updates at or before as_of (int_user_attribute_updates). -#}
{% macro cohortflow_user_property_ctes(c, name, ctx) -%}
  {%- set label = "user_property('" ~ c.property ~ "')" -%}
  {%- set value_sql = "nullif(trim(user_properties ->> " ~ sql_literal(c.property) ~ "), '')" -%}
  {%- set predicate = cohortflow_value_predicate_sql('attribute_value', c.operator, c.value, true, label) -%}
  {%- if c.using == 'any_in_window' -%}
    {%- set from_sql = ref(ctx.attributes) ~ " as attributes" -%}
    {%- if c.within.kind == 'within_first' -%}
      {%- set from_sql = "(select attributes.*, cohort_users.first_seen_at from " ~ ref(ctx.attributes) ~ " as attributes inner join cohort_users on cohort_users.user_id = attributes.user_id) as attributes" -%}
    {%- endif -%}
    {{- return(name ~ " as (\n    -- " ~ label ~ ": any value set in the window\n    select user_id, min(updated_at) as matched_at\n    from (\n        select user_id, updated_at, " ~ value_sql ~ " as attribute_value\n        from " ~ from_sql
        ~ "\n        where " ~ window_sql(c.within, 'updated_at') ~ "\n    ) as updates\n    where attribute_value is not null and " ~ predicate ~ "\n    group by user_id\n)") -}}
  {%- endif -%}
{{ name }}_values as (
    -- {{ label }}: every update that set it, up to as_of
    select user_id, updated_at, update_sequence, attribute_value
    from (
        select user_id, updated_at, update_sequence, {{ value_sql }} as attribute_value
        from {{ ref(ctx.attributes) }}
    ) as updates
    where attribute_value is not null
),

{{ name }}_latest as (
    select user_id, attribute_value
    from (
        select user_id, attribute_value, row_number() over (partition by user_id order by update_sequence desc) as recency
        from {{ name }}_values
    ) as ranked
    where recency = 1
),

{{ name }}_set as (
    -- when the latest value was first set: the first update after the last one that said otherwise
    select all_values.user_id, min(all_values.updated_at) as value_set_at
    from {{ name }}_values as all_values
    inner join {{ name }}_latest as latest on latest.user_id = all_values.user_id
    left join (
        select all_values.user_id, max(all_values.update_sequence) as update_sequence
        from {{ name }}_values as all_values
        inner join {{ name }}_latest as latest on latest.user_id = all_values.user_id
        where all_values.attribute_value <> latest.attribute_value
        group by all_values.user_id
    ) as last_other on last_other.user_id = all_values.user_id
    where all_values.update_sequence > coalesce(last_other.update_sequence, 0)
    group by all_values.user_id
),

{{ name }} as (
  {%- if c.operator == 'is_null' %}
    -- never set up to as_of
    select cohort_users.user_id, cohort_users.first_seen_at as matched_at
    from cohort_users
    where not exists (select 1 from {{ name }}_latest as latest where latest.user_id = cohort_users.user_id)
  {%- else %}
    select latest.user_id, value_set.value_set_at as matched_at
    from {{ name }}_latest as latest
    inner join {{ name }}_set as value_set on value_set.user_id = latest.user_id
    where {{ cohortflow_value_predicate_sql('latest.attribute_value', c.operator, c.value, true, label) }}
  {%- endif %}
)
{%- endmacro %}


{#-
  SQL boolean: `column` <operator> value. `is_text`: the column holds text (a JSON attribute), so
  numbers are compared as exact decimals (cohortflow_try_cast(..., 'decimal'): text that is not a
  number is NULL and never matches) and booleans by their spelling; otherwise the column is typed.
  Number literals are exact (sql_literal), so a money column of user_properties compares exactly.
-#}
{% macro cohortflow_value_predicate_sql(column, operator, value, is_text, label) -%}
  {%- set values = value if operator in ('in', 'not_in') else [value] -%}
  {%- set numeric = values | length > 0 and (values | select('number') | list | length == values | length)
                    and not (values | select('sameas', true) | list) and not (values | select('sameas', false) | list) -%}
  {%- set boolean = value is sameas true or value is sameas false -%}
  {%- set expression = cohortflow_try_cast(column, 'decimal') if (is_text and numeric) else column -%}
  {%- if operator == 'is_null' -%}{{ column }} is null
  {%- elif operator == 'is_not_null' -%}{{ column }} is not null
  {%- elif boolean and is_text -%}
    {%- if operator not in ('=', '!=') -%}
      {{- cohortflow_fail(label ~ " operator", "a true / false value takes = or !=, not " ~ operator) -}}
    {%- endif -%}
    {%- set wanted = value if operator == '=' else not value -%}
    lower({{ column }}) in {{ "('true', 't', '1', 'yes')" if wanted else "('false', 'f', '0', 'no')" }}
  {%- elif operator in ('in', 'not_in') -%}
    {{ expression }} {{ 'not in' if operator == 'not_in' else 'in' }} ({% for v in values %}{{ sql_literal(v) }}{{ ', ' if not loop.last }}{% endfor %})
  {%- elif operator == 'contains' -%}
    lower({{ column }}) like '%{{ (value ~ '') | lower | replace("'", "''") }}%'
  {%- elif operator == '!=' -%}
    {{ expression }} is distinct from {{ sql_literal(value) }}
  {%- else -%}
    {{ expression }} {{ operator }} {{ sql_literal(value) }}
  {%- endif -%}
{%- endmacro %}
