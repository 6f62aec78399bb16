{#-
  Per-day state: what an hourly run keeps so that it costs what the new hour costs.

  A *state* is one filter over the events — event types, where(...) predicates and, optionally, an
  input (a numeric or text property) — as used by a computed property or a cohort's performed(...).
  For every state, user and UTC day with a matching event, int_user_daily_state keeps the partial
  aggregates of that day (count, first / last event, sum / min / max or first / last value of the
  input) and int_user_daily_state_values one row per distinct input value (count and first time).
  Both are incremental: a run recomputes exactly the (user, day) pairs that received events since
  it last ran (late and back-dated events included), and computes a state nobody used before over
  all history. Neither is cut by as_of.

  A window (windows.sql) then reads
    - the stored days that lie wholly inside it, and
    - the raw events only of its two edge days (the day it starts in and the as_of day),
  and combines the partials per user. Lifetime and whole-day windows therefore read ~ one row per
  active user and day instead of every event, and the result is exactly what reading every event
  gives (tests/integration/test_incremental.py and the hand-worked fixture compare them).

  Which states exist: every computed property and every performed(...) condition of every model in
  the graph (computed_properties() and cohort() write their compiled declarations to config.meta
  while dbt parses), plus the built-in states of the intermediate models (builtin_states()),
  collected by project_daily_states() when the state models are built. within_first(...) windows, sequence(...)
  and nth_time inside them, and any cohort or property compiled against other inputs (the macro
  tests, dbt unit tests) read the events directly, as before: daily_state_available() says which.
-#}

{#- ------------------------------------------------------------------ states -------------------- -#}

{#-
  A state: events (list; [] = any event), predicates, an input SQL expression over the event row and
  its kind ('none' | 'numeric' | 'text'). `values`: also keep per-value rows (distinct counts, most
  frequent / unique lists). The id is a hash of everything that defines the rows, so two cohorts or
  properties with the same filter share one state.
-#}
{% macro daily_state(events, where, input=none, input_kind='none', values=false, measure=none, running=false, ends=false, days=none) -%}
  {#- days: keep per-day rows too (default: unless only the values are needed). -#}
  {%- set days = (not values) if days is none else days -%}
  {%- set events = [] if (events is none or events == ['*']) else (events | sort | list) -%}
  {%- set where = where or [] -%}
  {%- set key = {'events': events, 'where': where, 'input': input, 'input_kind': input_kind, 'values': values,
                 'measure': measure, 'running': running, 'ends': ends, 'days': days} -%}
  {{- return({'id': local_md5(tojson(key, sort_keys=true))[:16], 'events': events, 'where': where,
              'input': input, 'input_kind': input_kind, 'values': values, 'measure': measure, 'running': running,
              'ends': ends, 'days': days}) -}}
{%- endmacro %}


{#-
  The states the built-in intermediate models read (int_orders, int_user_purchases_aggregated,
  int_user_activity_aggregated, int_user_favourite_categories), by name.
-#}
{% macro builtin_states() -%}
  {{- return({
      'any_event': daily_state([], []),
      'sessions': daily_state([], [], 'session_id', 'text', values=true),
      'event_hours': daily_state([], [], "lpad(cast(cast(extract(hour from event_at) as integer) as varchar), 2, '0')", 'text', values=true),
      'net_revenue': daily_state(['purchase', 'cancel_purchase'], [where('revenue', 'is_not_null')],
                                 "case when event_type = 'purchase' then revenue else -abs(revenue) end", 'numeric'),
      'orders': daily_state(['purchase'], [], 'coalesce(order_id, event_id)', 'text', values=true, measure='revenue'),
      'purchased_categories': daily_state(['purchase'], [], 'category', 'text', values=true),
      'viewed_categories': daily_state(['view_item'], [], 'category', 'text', values=true),
  }) -}}
{%- endmacro %}


{% macro builtin_property_states() -%}
  {{- return(builtin_states().values() | list) -}}
{%- endmacro %}


{#- Data test: at most one row per combination of `columns`. -#}
{% test one_row_per(model, columns) %}
select {{ columns | join(', ') }}, count(*) as row_count
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}


{#- Whether a window can be read from the per-day state (every kind but within_first). -#}
{% macro daily_state_window_ok(window) -%}
  {{- return(window.kind in ('last', 'since', 'between', 'ever')) -}}
{%- endmacro %}


{#-
  Whether what is compiled now may read the per-day state instead of `events`: a model (not a dbt
  unit test, whose given rows are events, nor an inline query or analysis, which no state was kept
  for) of a project that keeps the state (var `cohortflow_daily_state: true`, set in dbt_project.yml;
  projects that only borrow these macros, like the macro tests, read events), over the project's own
  events. `--vars '{cohortflow_daily_state: false}'` reads every event directly: the reference the
  state is tested against.
-#}
{% macro daily_state_available(events_model) -%}
  {%- if events_model != 'int_events_as_of' -%}{{- return(false) -}}{%- endif -%}
  {%- if not (model is defined and model is not none and model.resource_type is defined and model.resource_type == 'model') -%}
    {{- return(false) -}}
  {%- endif -%}
  {%- if config.get('materialized') == 'unit' -%}{{- return(false) -}}{%- endif -%}
  {{- return(var('cohortflow_daily_state', false) not in (false, 'false', 'False', 0, none)) -}}
{%- endmacro %}


{#- The states a cohort condition (performed) reads. -#}
{% macro cohort_condition_state(c) -%}
  {%- set m = c.measure -%}
  {%- if m.kind == 'total' -%}
    {%- set holds_at_zero = cohortflow_compare(0, c.operator, c.value) -%}
    {{- return(daily_state(c.events, c.where, event_property_sql(m.property, true), 'numeric', running=not holds_at_zero)) -}}
  {%- elif m.kind == 'distinct' -%}
    {{- return(daily_state(c.events, c.where, event_property_sql(m.property), 'text', values=true, days=true)) -}}
  {%- else -%}
    {{- return(daily_state(c.events, c.where)) -}}
  {%- endif -%}
{%- endmacro %}


{#-
  Every state the project's models read: the built-in states, and the computed properties and
  performed(...) conditions of every model in the graph (config.meta.computed_properties and
  config.meta.cohort_definition, written by computed_properties() and cohort() at parse time).
  Only the built-in ones while parsing.
-#}
{% macro project_daily_states() -%}
  {%- set found = {} -%}
  {%- for s in builtin_property_states() -%}{%- do found.update({s.id: s}) -%}{%- endfor -%}
  {%- if execute -%}
    {%- for node in graph.nodes.values() if node.resource_type == 'model' -%}
      {%- for p in (node.config.meta or {}).get('computed_properties') or [] -%}
        {%- set s = computed_property_state(p) -%}
        {%- if s is not none -%}{%- do found.update({s.id: s}) -%}{%- endif -%}
      {%- endfor -%}
      {%- set definition = (node.config.meta or {}).get('cohort_definition') -%}
      {%- if definition is mapping -%}
        {%- for clause in definition.andClauses -%}
          {%- for c in clause.orClauses -%}
            {%- if c.type == 'performed' and daily_state_window_ok(c.within) and c.measure.kind != 'nth_time' -%}
              {%- set s = cohort_condition_state(c) -%}
              {%- do found.update({s.id: s}) -%}
            {%- elif c.type == 'performed' and c.measure.kind == 'nth_time' -%}
              {%- set s = daily_state(c.events, c.where) -%}
              {%- do found.update({s.id: s}) -%}
            {%- endif -%}
          {%- endfor -%}
        {%- endfor -%}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
  {{- return(found.values() | sort(attribute='id') | list) -}}
{%- endmacro %}


{#- ------------------------------------------------------------------ partials ------------------ -#}

{#- SQL boolean: the event row matches the state's event types and predicates. -#}
{% macro daily_state_match_sql(state) -%}
  ({{ cohortflow_event_type_sql(state.events) }} and {{ predicates_sql(state.where) }})
{%- endmacro %}


{#-
  The select list of one state's partials over event rows grouped by user and day. The stored days
  (int_user_daily_state) and the edge days read from events at as_of both use exactly this list.
-#}
{% macro daily_state_partials(state) -%}
  {%- set money = cohortflow_money_sum_type() -%}
    count(*) as event_count,
    min(event_at) as first_event_at,
    max(event_at) as last_event_at,
  {%- if state.input_kind == 'none' %}
    cast(null as bigint) as input_count,
    cast(null as {{ money }}) as input_sum,
    cast(null as {{ money }}) as input_min,
    cast(null as {{ money }}) as input_max,
    cast(null as {{ money }}) as running_max,
    cast(null as {{ money }}) as running_min,
    cast(null as timestamp) as first_input_at,
    cast(null as varchar) as first_input_id,
    cast(null as varchar) as first_input,
    cast(null as timestamp) as last_input_at,
    cast(null as varchar) as last_input_id,
    cast(null as varchar) as last_input
  {%- else %}
    {%- set input = '(' ~ state.input ~ ')' %}
    count({{ input }}) as input_count,
    {%- if state.input_kind == 'numeric' %}
    cast(sum({{ input }}) as {{ money }}) as input_sum,
    cast(min({{ input }}) as {{ money }}) as input_min,
    cast(max({{ input }}) as {{ money }}) as input_max,
    {%- if state.running %}
    cast(max(day_running_sum) as {{ money }}) as running_max,
    cast(min(day_running_sum) as {{ money }}) as running_min,
    {%- else %}
    cast(null as {{ money }}) as running_max,
    cast(null as {{ money }}) as running_min,
    {%- endif %}
    {%- else %}
    cast(null as {{ money }}) as input_sum,
    cast(null as {{ money }}) as input_min,
    cast(null as {{ money }}) as input_max,
    cast(null as {{ money }}) as running_max,
    cast(null as {{ money }}) as running_min,
    {%- endif %}
    min(event_at) filter (where {{ input }} is not null) as first_input_at,
    {%- if state.ends %}
    {#- Only first_value / last_value need the value at the ends, and the event id for ties. -#}
    {{ cohortflow_arg_min('event_id', '(event_at, event_id)', input ~ ' is not null') }} as first_input_id,
    {{ cohortflow_arg_min('cast(' ~ input ~ ' as varchar)', '(event_at, event_id)') }} as first_input,
    {%- else %}
    cast(null as varchar) as first_input_id,
    cast(null as varchar) as first_input,
    {%- endif %}
    max(event_at) filter (where {{ input }} is not null) as last_input_at,
    {%- if state.ends %}
    {{ cohortflow_arg_max('event_id', '(event_at, event_id)', input ~ ' is not null') }} as last_input_id,
    {{ cohortflow_arg_max('cast(' ~ input ~ ' as varchar)', '(event_at, event_id)') }} as last_input
    {%- else %}
    cast(null as varchar) as last_input_id,
    cast(null as varchar) as last_input
    {%- endif %}
  {%- endif %}
{%- endmacro %}


{#-
  FROM source for a state's partials: numeric states read the events with the running sum of the
  input within each user's day (ordered by event_at, event_id), whose extremes the partials keep.
-#}
{% macro daily_state_source(state, relation, where_sql) -%}
  {%- if state.input_kind == 'numeric' and state.running -%}
    (select *, sum({{ state.input }}) over (
         partition by user_id, cast(event_at as date) order by event_at, event_id
         rows between unbounded preceding and current row) as day_running_sum
     from {{ relation }}
     where {{ where_sql }}) as state_events
  {%- else -%}
    (select * from {{ relation }} where {{ where_sql }}) as state_events
  {%- endif -%}
{%- endmacro %}


{#- The partial columns, in order (for unions and the table's contract). -#}
{% macro daily_state_partial_columns() -%}
  {{- return(['event_count', 'first_event_at', 'last_event_at',
              'input_count', 'input_sum', 'input_min', 'input_max', 'running_max', 'running_min',
              'first_input_at', 'first_input_id', 'first_input', 'last_input_at', 'last_input_id', 'last_input']) -}}
{%- endmacro %}


{#- Per-value partials of a state with values=true: one row per user, day and non-NULL input value. -#}
{% macro daily_state_value_partials(state) -%}
    cast({{ state.input }} as varchar) as property_value,
    count(*) as value_count,
    cast({% if state.measure %}sum({{ state.measure }}){% else %}null{% endif %} as {{ cohortflow_money_sum_type() }}) as value_sum,
    min(event_at) as first_value_at
{%- endmacro %}


{#- ------------------------------------------------------------------ windows ------------------- -#}

{#-
  A window's bounds for reading the per-day state: SQL expressions for its start and end, whether
  each is inclusive, and the SQL booleans selecting the stored days wholly inside it (`days`, on
  activity_date) and the events of its edge days (`edges`, on event_at). Every window ends at as_of
  at the latest.
-#}
{% macro daily_state_bounds(window) -%}
  {%- set as_of_text = as_of_utc() -%}
  {%- if window.kind == 'last' -%}
    {%- set start = dbt.dateadd(window.unit, -1 * window.amount, as_of()) -%}
    {%- set bounds = {'start': start, 'start_op': '>', 'end': as_of(), 'end_op': '<='} -%}
  {%- elif window.kind == 'since' -%}
    {%- set bounds = {'start': "cast('" ~ window.start ~ "' as timestamp)", 'start_op': '>=', 'end': as_of(), 'end_op': '<='} -%}
  {%- elif window.kind == 'between' -%}
    {%- if window.end <= as_of_text[:19] -%}
      {%- set bounds = {'start': "cast('" ~ window.start ~ "' as timestamp)", 'start_op': '>=', 'end': "cast('" ~ window.end ~ "' as timestamp)", 'end_op': '<'} -%}
    {%- else -%}
      {%- set bounds = {'start': "cast('" ~ window.start ~ "' as timestamp)", 'start_op': '>=', 'end': as_of(), 'end_op': '<='} -%}
    {%- endif -%}
  {%- else -%}
    {%- set bounds = {'start': none, 'start_op': none, 'end': as_of(), 'end_op': '<='} -%}
  {%- endif -%}
  {%- set end_day = 'cast(' ~ bounds.end ~ ' as date)' -%}
  {%- if bounds.start is none -%}
    {%- set days = 'activity_date < ' ~ end_day -%}
    {%- set edges = '(event_at ' ~ bounds.end_op ~ ' ' ~ bounds.end ~ ' and event_at >= cast(' ~ end_day ~ ' as timestamp))' -%}
  {%- else -%}
    {%- set start_day = 'cast(' ~ bounds.start ~ ' as date)' -%}
    {%- set days = '(activity_date > ' ~ start_day ~ ' and activity_date < ' ~ end_day ~ ')' -%}
    {%- set edges = '(event_at ' ~ bounds.start_op ~ ' ' ~ bounds.start ~ ' and event_at ' ~ bounds.end_op ~ ' ' ~ bounds.end
        ~ ' and (event_at < ' ~ dbt.dateadd('day', 1, 'cast(' ~ start_day ~ ' as timestamp)')
        ~ ' or event_at >= cast(' ~ end_day ~ ' as timestamp)))' -%}
  {%- endif -%}
  {%- do bounds.update({'days': days, 'edges': edges}) -%}
  {{- return(bounds) -}}
{%- endmacro %}


{#- The window on event rows read directly (int_events_as_of is already cut at as_of: ever() needs nothing). -#}
{% macro daily_state_direct_window_sql(window) -%}
  {{- 'true' if window.kind == 'ever' else window_sql(window, 'event_at') -}}
{%- endmacro %}


{#-
  SQL: one row per (user, day) of the state inside `window` — the stored days wholly inside it and
  the edge days recomputed from the events — with the partial columns. `events` is the relation of
  int_events_as_of's shape (default ref('int_events_as_of')).
-#}
{% macro daily_state_window_rows(state, window, events=none) -%}
  {%- set events = events if events is not none else ref('int_events_as_of') -%}
  {%- if not daily_state_available('int_events_as_of') -%}
    {#- A dbt unit test (given event rows) or the reference reading: every day from the events. -#}
    select user_id, cast(event_at as date) as activity_date,
    {{ daily_state_partials(state) }}
    from {{ daily_state_source(state, events, daily_state_match_sql(state) ~ ' and ' ~ daily_state_direct_window_sql(window)) }}
    group by user_id, cast(event_at as date)
  {%- else -%}
  {%- set b = daily_state_bounds(window) -%}
  {%- set columns = daily_state_partial_columns() -%}
    select user_id, activity_date, {{ columns | join(', ') }}
    from {{ ref('int_user_daily_state') }}
    where state_id = '{{ state.id }}' and {{ b.days }}
    union all
    select user_id, cast(event_at as date) as activity_date,
    {{ daily_state_partials(state) }}
    from {{ daily_state_source(state, events, daily_state_match_sql(state) ~ ' and ' ~ b.edges) }}
    group by user_id, cast(event_at as date)
  {%- endif -%}
{%- endmacro %}


{#- The same for the per-value rows: (user, day, property_value, value_count, value_sum, first_value_at). -#}
{% macro daily_state_window_values(state, window, events=none) -%}
  {%- set events = events if events is not none else ref('int_events_as_of') -%}
  {%- if not daily_state_available('int_events_as_of') -%}
    select user_id, cast(event_at as date) as activity_date,
    {{ daily_state_value_partials(state) }}
    from {{ events }}
    where {{ daily_state_match_sql(state) }} and {{ daily_state_direct_window_sql(window) }} and ({{ state.input }}) is not null
    group by user_id, cast(event_at as date), cast({{ state.input }} as varchar)
  {%- else -%}
  {%- set b = daily_state_bounds(window) -%}
    select user_id, activity_date, property_value, value_count, value_sum, first_value_at
    from {{ ref('int_user_daily_state_values') }}
    where state_id = '{{ state.id }}' and {{ b.days }}
    union all
    select user_id, cast(event_at as date) as activity_date,
    {{ daily_state_value_partials(state) }}
    from {{ events }}
    where {{ daily_state_match_sql(state) }} and {{ b.edges }} and ({{ state.input }}) is not null
    group by user_id, cast(event_at as date), cast({{ state.input }} as varchar)
  {%- endif -%}
{%- endmacro %}


{#- ------------------------------------------------------------------ the state models ---------- -#}

{#-
  Body of int_user_daily_state / int_user_daily_state_values (values=true): every state's partials
  per user and day, from int_events. Incremental: the (user, day) pairs with events loaded since the
  table's last run, for the states it already holds; every day for a state it does not hold yet.
-#}
{% macro daily_state_model(values=false) -%}
  {%- set states = project_daily_states() | selectattr('values' if values else 'days') | list -%}
  {%- set known = [] -%}
  {%- set since = none -%}
  {%- if is_incremental() and execute -%}
    {%- for row in run_query('select distinct state_id from ' ~ this).rows -%}{%- do known.append(row[0]) -%}{%- endfor -%}
    {%- set watermark = run_query('select max(dbt_loaded_at) from ' ~ this).rows[0][0] -%}
    {%- if watermark is not none -%}
      {#- The earliest day touched by the new rows, as a literal: DuckDB skips older row groups of
          int_events (appended roughly in event-time order) instead of scanning them. -#}
      {%- set earliest = run_query("select min(event_at) from " ~ ref('int_events') ~ " where dbt_loaded_at > cast('" ~ watermark ~ "' as timestamp)").rows[0][0] -%}
      {%- set since = {'watermark': watermark, 'earliest': earliest} -%}
    {%- endif -%}
  {%- endif -%}

{#- Each branch reads int_events itself: a CTE over every event read by many branches would be
    materialised (a copy of every event, JSON included). -#}
with
{%- if since is not none %}

touched_days as (

    select distinct user_id, cast(event_at as date) as activity_date
    from {{ ref('int_events') }}
    where dbt_loaded_at > cast('{{ since.watermark }}' as timestamp)

),

recent_events as (

    -- The events of the touched days (the new ones and the rest of their day).
    select events.*
    from {{ ref('int_events') }} as events
    inner join touched_days
        on events.user_id = touched_days.user_id
        and cast(events.event_at as date) = touched_days.activity_date
    {%- if since.earliest is not none %}
    where events.event_at >= cast('{{ since.earliest.strftime("%Y-%m-%d") }}' as timestamp)
    {%- else %}
    where false
    {%- endif %}

),
{%- endif %}

state_rows as (
    {%- for s in states %}
    {%- set source = 'recent_events' if (since is not none and s.id in known) else ref('int_events') %}
    {%- if not loop.first %}
    union all
    {%- endif %}
    -- state {{ s.id }}: {{ s.events | join(', ') or 'any event' }}{% if s.where %} where {{ s.where | map(attribute='property') | join(', ') }}{% endif %}{% if s.input %} ({{ s.input_kind }} input){% endif %}
    select
        '{{ s.id }}' as state_id,
        user_id,
        cast(event_at as date) as activity_date,
        {%- if values %}
        {{ daily_state_value_partials(s) }},
        {%- else %}
        {{ daily_state_partials(s) }},
        {%- endif %}
        max(dbt_loaded_at) as dbt_loaded_at
    {%- if values %}
    from {{ source }}
    where {{ daily_state_match_sql(s) }} and ({{ s.input }}) is not null
    group by user_id, cast(event_at as date), cast({{ s.input }} as varchar)
    {%- else %}
    from {{ daily_state_source(s, source, daily_state_match_sql(s)) }}
    group by user_id, cast(event_at as date)
    {%- endif %}
    {%- endfor %}
)

select * from state_rows
{%- endmacro %}




{#- ------------------------------------------------------------------ cohort conditions --------- -#}

{#- Whether a performed(...) condition is read from the per-day state (see the file header). -#}
{% macro performed_reads_daily_state(c, ctx) -%}
  {%- if not daily_state_available(ctx.events) or not daily_state_window_ok(c.within) -%}{{- return(false) -}}{%- endif -%}
  {%- if c.measure.kind == 'total' and c.operator in ('=', '!=') and not cohortflow_compare(0, c.operator, c.value) -%}
    {#- The first moment a running sum equals a value exactly needs every event. -#}
    {{- return(false) -}}
  {%- endif -%}
  {{- return(true) -}}
{%- endmacro %}


{#-
  The k of "the k-th matching event is the first at which count <operator> value holds", for a
  comparison that does not hold at zero; 0 when no whole count satisfies it first (count = 2.5).
-#}
{% macro cohortflow_crossing_count(operator, value) -%}
  {%- if operator == '>=' -%}{{- return((value | round(0, 'ceil')) | int) -}}
  {%- elif operator == '>' -%}{{- return((value | round(0, 'floor')) | int + 1) -}}
  {%- elif operator == '=' -%}{{- return((value | int) if value == (value | int) else 0) -}}
  {%- else -%}{{- return(1) -}}
  {%- endif -%}
{%- endmacro %}


{#-
  CTEs finding, per user, the event at which a running count reaches its k-th event (`kind` count,
  k from cohortflow_crossing_count) or a running sum first satisfies `<operator> value` (`kind`
  total): `<name>_crossings (user_id, reached_at)`. The day is found from the per-day rows (a
  running total's extremes within the day tell whether it crossed there); only that day's events are
  read, through a join on (user, day).
-#}
{% macro cohortflow_state_crossing_ctes(c, name, s, events) -%}
  {%- set m = c.measure -%}
{{ name }}_crossing_days as (
    -- the first day on which the running measure reached it
    select user_id, activity_date, before_day
    from (
    select user_id, activity_date, before_day,
           row_number() over (partition by user_id order by activity_date) as crossing_rank
    from (
        select
            user_id,
            activity_date,
            {%- if m.kind == 'total' %}
            coalesce(sum(input_sum) over (partition by user_id order by activity_date rows between unbounded preceding and 1 preceding), 0) as before_day,
            running_max,
            running_min
            {%- else %}
            coalesce(sum(event_count) over (partition by user_id order by activity_date rows between unbounded preceding and 1 preceding), 0) as before_day,
            event_count
            {%- endif %}
        from {{ name }}_days
    ) as days
    {%- if m.kind == 'total' %}
    where {% if c.operator in ('>', '>=') %}before_day + running_max {{ c.operator }} {{ sql_literal(c.value) }}{% else %}before_day + running_min {{ c.operator }} {{ sql_literal(c.value) }}{% endif %}
    {%- else %}
    where before_day < {{ cohortflow_crossing_count(c.operator, c.value) }}
      and before_day + event_count >= {{ cohortflow_crossing_count(c.operator, c.value) }}
    {%- endif %}
    ) as candidates
    where crossing_rank = 1
),

{{ name }}_crossings as (
    select user_id, min(event_at) as reached_at
    from (
        select
            crossing.user_id,
            events.event_at,
            {%- if m.kind == 'total' %}
            crossing.before_day + sum(events.measure_input) over (
                partition by crossing.user_id order by events.event_at, events.event_id
                rows between unbounded preceding and current row) as running_value
            {%- else %}
            crossing.before_day + row_number() over (
                partition by crossing.user_id order by events.event_at, events.event_id) as running_value
            {%- endif %}
        from {{ name }}_crossing_days as crossing
        inner join (
            select user_id, event_at, event_id{% if m.kind == 'total' %}, {{ s.input }} as measure_input{% endif %}
            from {{ events }}
            where {{ daily_state_match_sql(s) }} and {{ window_sql(c.within, 'event_at') }}
        ) as events
            on events.user_id = crossing.user_id
            and cast(events.event_at as date) = crossing.activity_date
    ) as running
    {%- if m.kind == 'total' %}
    where running_value {{ c.operator }} {{ sql_literal(c.value) }}
    {%- else %}
    where running_value = {{ cohortflow_crossing_count(c.operator, c.value) }}
    {%- endif %}
    group by user_id
)
{%- endmacro %}


{#-
  performed(...) read from the per-day state: the CTEs up to `<name>_per_user` (user_id,
  measure_value, reached_at, last_event_at), with exactly the values cohortflow_performed_ctes gets
  from the events; nth_time gives `<name>` itself. The caller adds the final `<name>` CTE otherwise.
-#}
{% macro cohortflow_performed_state_ctes(c, name, ctx) -%}
  {%- set m = c.measure -%}
  {%- set events = ref(ctx.events) -%}
  {%- set label = "performed(" ~ (c.events | join(', ') or '*') ~ ")" -%}
  {%- if m.kind == 'nth_time' -%}
  {%- set s = daily_state(c.events, c.where) -%}
{{ name }}_days as (
    -- {{ label }}: matching events per day over all history up to as_of (state {{ s.id }})
    {{ daily_state_window_rows(s, ever(), events) }}
),

{{ name }}_crossing_days as (
    -- the day of the {{ m.n }}th occurrence ever and how many came before that day
    select user_id, activity_date, before_day
    from (
        select user_id, activity_date, event_count,
               coalesce(sum(event_count) over (partition by user_id order by activity_date rows between unbounded preceding and 1 preceding), 0) as before_day
        from {{ name }}_days
    ) as days
    where before_day < {{ m.n }} and before_day + event_count >= {{ m.n }}
),

{{ name }} as (
    -- the {{ m.n }}th time fell in the window
    select user_id, event_at as matched_at
    from (
        select
            crossing.user_id,
            events.event_at,
            crossing.before_day + row_number() over (partition by crossing.user_id order by events.event_at, events.event_id) as occurrence
        from {{ name }}_crossing_days as crossing
        inner join {{ events }} as events
            on events.user_id = crossing.user_id
            and cast(events.event_at as date) = crossing.activity_date
        where {{ daily_state_match_sql(s) }}
    ) as occurrences
    where occurrence = {{ m.n }}
      and {{ window_sql(c.within, 'event_at') }}
)
  {%- else -%}
  {%- set s = cohort_condition_state(c) -%}
  {%- set holds_at_zero = cohortflow_compare(0, c.operator, c.value) -%}
  {%- set at_least_one = (c.operator == '>=' and c.value <= 1) or (c.operator == '>' and c.value < 1) -%}
  {%- set needs_running = not holds_at_zero and not (at_least_one and m.kind != 'total') -%}
{{ name }}_days as (
    -- {{ label }} in the window, per day: stored days inside it, edge days from the events (state {{ s.id }})
    {{ daily_state_window_rows(s, c.within, events) }}
),
    {%- if m.kind == 'distinct' %}

{{ name }}_values as (
    -- each distinct value once, ranked by the first moment it occurred in the window
    select user_id, first_at,
           -- values first seen at the same moment take consecutive ranks at that moment, whichever first
           row_number() over (partition by user_id order by first_at, property_value) as value_rank
    from (
        select user_id, property_value, min(first_value_at) as first_at
        from (
            {{ daily_state_window_values(s, c.within, events) }}
        ) as value_days
        group by user_id, property_value
    ) as distinct_values
),

{{ name }}_distinct as (
    select user_id, count(*) as measure_value,
           min(first_at) filter (where value_rank {{ c.operator }} {{ sql_literal(c.value) }}) as reached_at
    from {{ name }}_values
    group by user_id
),
    {%- endif %}
    {%- if needs_running and m.kind in ('count', 'total') %}

{{ cohortflow_state_crossing_ctes(c, name, s, events) }},
    {%- endif %}

{{ name }}_per_user as (
    select
        days.user_id,
        {%- if m.kind == 'count' %}
        sum(days.event_count) as measure_value,
        {%- elif m.kind == 'total' %}
        coalesce(sum(days.input_sum), 0) as measure_value,
        {%- elif m.kind == 'on_distinct_days' %}
        count(*) as measure_value,
        {%- else %}
        coalesce(max(distinct_values.measure_value), 0) as measure_value,
        {%- endif %}
        {%- if not needs_running %}
        min(days.{{ 'first_input_at' if m.kind in ('total', 'distinct') else 'first_event_at' }}) as reached_at,
        {%- elif m.kind == 'on_distinct_days' %}
        min(days.first_event_at) filter (where days.day_rank {{ c.operator }} {{ sql_literal(c.value) }}) as reached_at,
        {%- elif m.kind == 'distinct' %}
        max(distinct_values.reached_at) as reached_at,
        {%- else %}
        max(crossings.reached_at) as reached_at,
        {%- endif %}
        max(days.last_event_at) as last_event_at
    from (
        select *, row_number() over (partition by user_id order by activity_date) as day_rank
        from {{ name }}_days
    ) as days
    {%- if m.kind == 'distinct' %}
    left join {{ name }}_distinct as distinct_values on distinct_values.user_id = days.user_id
    {%- endif %}
    {%- if needs_running and m.kind in ('count', 'total') %}
    left join {{ name }}_crossings as crossings on crossings.user_id = days.user_id
    {%- endif %}
    group by days.user_id
)
  {%- endif -%}
{%- endmacro %}


{#- ------------------------------------------------------------------ computed properties ------- -#}

{#- The state a computed property reads, or none when it reads the events (a within_first window). -#}
{% macro computed_property_state(p) -%}
  {%- if not daily_state_window_ok(p.within) -%}{{- return(none) -}}{%- endif -%}
  {%- set events = [] if p.events[0] == '*' else p.events -%}
  {%- if p.kind in property_time_bucket_kinds() -%}
    {#- preferred_hour / preferred_day_of_week: per day, the UTC quarter-hours the user acted in (and the
        unit: order or session), turned into a local hour or weekday when read. Every zone's offset is a
        whole number of quarter-hours and zones change offset on the hour, so this is exact. -#}
    {%- set quarter = "lpad(cast(cast(extract(hour from event_at) as integer) * 4 + cast(floor(extract(minute from event_at) / 15) as integer) as varchar), 2, '0')" -%}
    {%- set input = quarter if p.unit == 'events' else quarter ~ " || '|' || cast(" ~ property_unit_key_sql(p) ~ " as varchar)" -%}
    {{- return(daily_state(events, p.where, input, 'text', values=true)) -}}
  {%- endif -%}
  {%- if p.kind == 'event_count' or p.property == 'event_at' -%}
    {{- return(daily_state(events, p.where)) -}}
  {%- elif p.kind == 'aggregate' -%}
    {{- return(daily_state(events, p.where, property_value_sql(p), 'numeric')) -}}
  {%- elif p.kind in ('first_value', 'last_value') -%}
    {{- return(daily_state(events, p.where, property_value_sql(p), 'text', ends=true)) -}}
  {%- else -%}
    {{- return(daily_state(events, p.where, property_value_sql(p), 'text', values=true)) -}}
  {%- endif -%}
{%- endmacro %}


{#-
  One property's CTE body over the per-day state: (user_id, property_value) for the users with a
  value; computed_properties() adds the empty values and the column type, as for the event reading.
-#}
{% macro computed_property_state_sql(p, events=none, time_zones=none) -%}
  {%- set s = computed_property_state(p) -%}
  {%- if p.kind in property_time_bucket_kinds() -%}
    {%- set start = "cast(activity_date as timestamp)" -%}
    {%- set at = dbt.dateadd('minute', "15 * cast(" ~ dbt.split_part('property_value', "'|'", 1) ~ " as integer)", start) -%}
    {%- set at = cohortflow_utc_to_local(at, 'user_time_zone') if p.time_zone == 'user' else at -%}
    {%- set bucket = cohortflow_hour(at) if p.kind == 'preferred_hour' else cohortflow_iso_day_of_week(at) %}
    -- {{ p.label }} from the per-day state (state {{ s.id }}): per day the UTC quarter-hours with {{ p.unit }},
    -- each in the {{ "user's zone" if p.time_zone == 'user' else 'UTC' }}; ties go to the earliest.
    select user_id, property_value
    from (
        select user_id, property_value,
               row_number() over (partition by user_id order by unit_count desc, property_value) as value_rank
        from (
            {%- if p.unit == 'events' %}
            select user_id, bucket as property_value, sum(value_count) as unit_count
            {%- else %}
            select user_id, bucket as property_value, count(distinct unit_key) as unit_count
            {%- endif %}
            from (
                select value_days.user_id, value_days.value_count,
                       {{ dbt.split_part('property_value', "'|'", 2) if p.unit != 'events' else 'null' }} as unit_key,
                       {{ bucket }} as bucket
                from (
                    select value_days.*{% if p.time_zone == 'user' %}, coalesce(user_time_zones.time_zone, 'UTC') as user_time_zone{% endif %}
                    from ({{ daily_state_window_values(s, p.within, events) }}) as value_days
                    {%- if p.time_zone == 'user' %}
                    left join {{ time_zones }} as user_time_zones on user_time_zones.user_id = value_days.user_id
                    {%- endif %}
                ) as value_days
            ) as buckets
            group by user_id, bucket
        ) as counted_units
    ) as ranked_units
    where value_rank = 1
  {%- elif p.kind in ('most_frequent', 'unique_list', 'unique_count') -%}
    {%- set value_days = daily_state_window_values(s, p.within, events) -%}
    {%- if p.kind == 'most_frequent' %}
    -- {{ p.label }} from the per-day state (state {{ s.id }}): the most frequent value, ties alphabetically first
    select user_id, property_value
    from (
        select user_id, property_value,
               row_number() over (partition by user_id order by value_count desc, property_value) as value_rank
        from (
            select user_id, property_value, sum(value_count) as value_count
            from ({{ value_days }}) as value_days
            group by user_id, property_value
        ) as counted_values
    ) as ranked_values
    where value_rank = 1
    {%- else %}
    -- {{ p.label }} from the per-day state (state {{ s.id }})
    select user_id, {% if p.kind == 'unique_count' %}count(*){% else %}{{ dbt.listagg('property_value', "','", 'order by property_value') }}{% endif %} as property_value
    from (
        select distinct user_id, property_value
        from ({{ value_days }}) as value_days
    ) as distinct_values
    group by user_id
    {%- endif %}
  {%- else -%}
    {%- if p.kind == 'event_count' -%}{%- set value = 'sum(event_count)' -%}
    {%- elif p.property == 'event_at' and (p.kind == 'first_value' or p.function == 'min') -%}
      {%- set value = 'min(first_event_at)' -%}
    {%- elif p.property == 'event_at' -%}{%- set value = 'max(last_event_at)' -%}
    {%- elif p.kind == 'first_value' -%}{%- set value = cohortflow_arg_min('first_input', '(first_input_at, first_input_id)') -%}
    {%- elif p.kind == 'last_value' -%}{%- set value = cohortflow_arg_max('last_input', '(last_input_at, last_input_id)') -%}
    {%- elif p.function == 'sum' -%}{%- set value = 'sum(input_sum)' -%}
    {%- elif p.function == 'min' -%}{%- set value = 'min(input_min)' -%}
    {%- elif p.function == 'max' -%}{%- set value = 'max(input_max)' -%}
    {%- else -%}{%- set value = cohortflow_exact_divide('sum(input_sum)', 'sum(input_count)') -%}
    {%- endif %}
    -- {{ p.label }} from the per-day state (state {{ s.id }})
    select user_id, {{ value }} as property_value
    from ({{ daily_state_window_rows(s, p.within, events) }}) as days
    group by user_id
  {%- endif -%}
{%- endmacro %}
