{#-
  Computed properties: one value per user, each declared in one line and compiled by
  `computed_properties([...])` into one grouped scan of the events (plus one small grouped query per
  most-frequent / unique-list / unique-count property).

      {{ computed_properties([
          event_count('view_count_7d', 'view_item', within=last(7, 'days')),
          aggregate('max_price_viewed_30d', 'max', 'price', event='view_item', within=last(30, 'days')),
          first_value('first_purchased_category', 'category', event='purchase'),
          last_value('last_viewed_item_id', 'item_id', event='view_item'),
          most_frequent('most_viewed_category_30d', 'category', event='view_item', within=last(30, 'days')),
          unique_list('categories_purchased', 'category', event='purchase'),
          unique_count('distinct_items_viewed_30d', 'item_id', event='view_item', within=last(30, 'days'),
                       where=[where('price', '>', 0)]),
      ]) }}

  Arguments every constructor takes:
    name    the column name (lower_snake_case, unique in the list);
    event   an event_type, a list of them, or '*' for any event (required: "any" must be said);
    within  a window from windows.sql (last / since / between / within_first / ever); default ever();
    where   a predicate or list of predicates from where(...), all of which must hold.

  Semantics (docs/properties.md has the full table):
    - NULL property values are ignored everywhere: sum / min / max / avg skip them, first / last value
      is the first / last event whose value is not NULL, most_frequent / unique_list / unique_count
      never return or count NULL. event_count counts events whatever their properties.
    - Users without a matching event get 0 for event_count, unique_count and sum, NULL otherwise.
    - Ties: first / last value by (event_at, event_id); most_frequent by count, then the alphabetically
      first value; unique_list is sorted and ','-joined ('books,shoes').
    - Types: counts bigint, aggregates cohortflow_money_sum_type() (exact decimal(38, 6); avg is the
      exact sum / count rounded half away from zero to 6 decimal places), everything else varchar
      (numbers written by `property_value_text`, so DuckDB and Postgres write the same text). The
      built-in event_at (when the event happened) gives a timestamp for min / max / first / last value.

  Properties on the event time itself (docs/properties.md, "Time of the event"):
    first_time(name, event, ...) / last_time(...)   the time of the first / last matching event
        (timestamp): min / max of event_at, i.e. aggregate(name, 'min' | 'max', 'event_at', ...).
    days_since(name, event, ...)   whole 24-hour periods from the last matching event to as_of:
        floor(seconds / 86400), integer, NULL without one (user_properties.days_since_last_active's
        rule, so `< N` <=> a matching event in last(N, 'days')).
    preferred_hour(name, event, unit=, time_zone=, ...) / preferred_day_of_week(...)   the hour
        (0-23) / ISO day (1 = Monday .. 7) with the most units, integer, NULL without one; ties go to
        the earliest hour / day. unit: 'events' (every matching event), 'orders' (distinct
        coalesce(order_id, event_id), int_orders' rule) or 'sessions' (distinct session_id; events
        without one are no session). A unit counts once in every hour / day one of its matching events
        fell in (an order with lines at 19:59 and 20:01 counts for 19 and for 20). time_zone: 'utc',
        or 'user' (each user's own zone: int_user_time_zones, macros/time_zones.sql; DST applied).

  Wrong arguments fail at compile time naming the model and the argument (cohortflow_fail). Every event
  type and property must be in the tracking plan (tracking_plan.sql), checked when the model compiles.
-#}

{% macro property_kinds() -%}
  {{- return(['event_count', 'aggregate', 'first_value', 'last_value', 'most_frequent', 'unique_list', 'unique_count',
              'preferred_hour', 'preferred_day_of_week']) -}}
{%- endmacro %}


{#- The kinds that count time buckets (hour / day of the week) of a unit; they name no property. -#}
{% macro property_time_bucket_kinds() -%}
  {{- return(['preferred_hour', 'preferred_day_of_week']) -}}
{%- endmacro %}


{#- What preferred_hour / preferred_day_of_week count, and in which zone they read event_at. -#}
{% macro property_time_units() -%}
  {{- return(['events', 'orders', 'sessions']) -}}
{%- endmacro %}

{% macro property_time_zones() -%}
  {{- return(['utc', 'user']) -}}
{%- endmacro %}


{% macro property_aggregate_functions() -%}
  {{- return(['sum', 'min', 'max', 'avg']) -}}
{%- endmacro %}


{% macro event_count(name, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('event_count', name, none, none, event, within, where)) -}}
{%- endmacro %}


{% macro aggregate(name, function, property, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('aggregate', name, property, function, event, within, where)) -}}
{%- endmacro %}


{% macro first_value(name, property, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('first_value', name, property, none, event, within, where)) -}}
{%- endmacro %}


{% macro last_value(name, property, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('last_value', name, property, none, event, within, where)) -}}
{%- endmacro %}


{% macro most_frequent(name, property, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('most_frequent', name, property, none, event, within, where)) -}}
{%- endmacro %}


{% macro unique_list(name, property, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('unique_list', name, property, none, event, within, where)) -}}
{%- endmacro %}


{% macro unique_count(name, property, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('unique_count', name, property, none, event, within, where)) -}}
{%- endmacro %}


{#- The time of the first / last matching event (timestamp): sugar for aggregate(name, 'min' | 'max', 'event_at', ...). -#}
{% macro first_time(name, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('aggregate', name, 'event_at', 'min', event, within, where, constructor='first_time')) -}}
{%- endmacro %}


{% macro last_time(name, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('aggregate', name, 'event_at', 'max', event, within, where, constructor='last_time')) -}}
{%- endmacro %}


{#-
  Whole 24-hour periods from the last matching event to as_of (integer; NULL without one): the latest
  event_at (an aggregate max, read like any other) finished by property_finish_sql.
-#}
{% macro days_since(name, event=none, within=none, where=none) -%}
  {{- return(cohortflow_property('aggregate', name, 'event_at', 'max', event, within, where, constructor='days_since',
                                 options={'finish': 'days_since'})) -}}
{%- endmacro %}


{#- The hour of the day (0-23) / ISO day of the week (1 = Monday .. 7) with the most units (events, orders, sessions). -#}
{% macro preferred_hour(name, event=none, unit='events', time_zone='utc', within=none, where=none) -%}
  {{- return(cohortflow_property('preferred_hour', name, none, none, event, within, where,
                                 options={'unit': unit, 'time_zone': time_zone})) -}}
{%- endmacro %}


{% macro preferred_day_of_week(name, event=none, unit='events', time_zone='utc', within=none, where=none) -%}
  {{- return(cohortflow_property('preferred_day_of_week', name, none, none, event, within, where,
                                 options={'unit': unit, 'time_zone': time_zone})) -}}
{%- endmacro %}


{#- Validate one declaration and return it as a dict. `label` (e.g. "event_count('x')") starts every message. -#}
{% macro cohortflow_property(kind, name, property, function, event, within, where, constructor=none, options=none) -%}
  {#- constructor: the macro the user wrote when it is sugar for another kind (first_time is an aggregate
      min of event_at), for messages; options: kind-specific keys (finish, unit, time_zone). -#}
  {%- set constructor = constructor or kind -%}
  {%- set options = options or {} -%}
  {%- if name is not string or not modules.re.match('^[a-z][a-z0-9_]*$', name) -%}
    {{- cohortflow_fail(constructor ~ '(name)', "property name " ~ (name | string) ~ " must be a lower_snake_case identifier") -}}
  {%- endif -%}
  {%- set label = constructor ~ "('" ~ name ~ "')" -%}

  {%- if kind == 'aggregate' and function not in property_aggregate_functions() -%}
    {{- cohortflow_fail(label ~ ' function', "unknown aggregate '" ~ (function | string) ~ "' (use one of " ~ property_aggregate_functions() | join(', ') ~ ")") -}}
  {%- endif -%}
  {%- set extra = {} -%}
  {%- if kind in property_time_bucket_kinds() -%}
    {%- if options.unit not in property_time_units() -%}
      {{- cohortflow_fail(label ~ ' unit', "unknown unit '" ~ (options.unit | string) ~ "' (use one of " ~ property_time_units() | join(', ') ~ ")") -}}
    {%- endif -%}
    {%- set zone = (options.time_zone | lower) if options.time_zone is string else options.time_zone -%}
    {%- if zone not in property_time_zones() -%}
      {{- cohortflow_fail(label ~ ' time_zone', "unknown time_zone '" ~ (options.time_zone | string)
          ~ "' (use 'utc', or 'user' for each user's own zone: their time_zone attribute, else their country's, else UTC)") -}}
    {%- endif -%}
    {%- do extra.update({'unit': options.unit, 'time_zone': zone}) -%}
  {%- endif -%}
  {%- if options.get('finish') is not none -%}{%- do extra.update({'finish': options.get('finish')}) -%}{%- endif -%}
  {%- if kind != 'event_count' and kind not in property_time_bucket_kinds() and (property is not string or property | length == 0) -%}
    {{- cohortflow_fail(label ~ ' property', "needs the name of an event property, got " ~ (property | string)) -}}
  {%- endif -%}
  {%- if property is string and "'" in property -%}
    {{- cohortflow_fail(label ~ ' property', "a property name cannot contain a quote: " ~ property) -}}
  {%- endif -%}
  {%- if kind == 'aggregate' and tracking_plan_builtin_properties().get(property) == 'string' -%}
    {{- cohortflow_fail(label ~ ' property', property ~ " is text; " ~ function ~ " needs a numeric property") -}}
  {%- endif -%}
  {%- if kind == 'aggregate' and property == 'event_at' and function not in ('min', 'max') -%}
    {{- cohortflow_fail(label ~ ' property', "event_at is a timestamp; " ~ function ~ " needs a number (min / max give the earliest / latest time)") -}}
  {%- endif -%}

  {%- if event is none or (event is string and event | length == 0) -%}
    {{- cohortflow_fail(label ~ ' event', "missing event: name an event_type, a list of them, or '*' for any event") -}}
  {%- endif -%}
  {%- set events = [event] if event is string else event -%}
  {%- if events is not iterable or events is mapping or events | length == 0 -%}
    {{- cohortflow_fail(label ~ ' event', "expected an event_type, a list of them or '*', got " ~ (event | string)) -}}
  {%- endif -%}
  {%- for e in events -%}
    {%- if e is not string or e | length == 0 or (e == '*' and events | length > 1) -%}
      {{- cohortflow_fail(label ~ ' event', "expected an event_type, a list of them or '*', got " ~ (event | string)) -}}
    {%- endif -%}
  {%- endfor -%}

  {%- set window = within if within is not none else ever() -%}
  {%- if not is_window(window) -%}
    {{- cohortflow_fail(label ~ ' within', "expected last(...), since(...), between(...), within_first(...) or ever(), got " ~ (within | string)) -}}
  {%- endif -%}

  {%- set predicates = [] if where is none else ([where] if where is mapping else where) -%}
  {%- if predicates is string or predicates is not iterable -%}
    {{- cohortflow_fail(label ~ ' where', "expected where(...) or a list of them, got " ~ (where | string)) -}}
  {%- endif -%}
  {%- for p in predicates -%}
    {%- if p is not mapping or 'property' not in p or 'operator' not in p -%}
      {{- cohortflow_fail(label ~ ' where', "expected where(...) or a list of them, got " ~ (p | string)) -}}
    {%- endif -%}
  {%- endfor -%}

  {%- set declaration = {'is_computed_property': true, 'kind': kind, 'name': name, 'label': label,
                         'constructor': constructor, 'property': property, 'function': function,
                         'events': events, 'within': window, 'where': predicates} -%}
  {%- do declaration.update(extra) -%}
  {{- return(declaration) -}}
{%- endmacro %}


{#- The SQL type of a property's column. -#}
{% macro property_data_type(p) -%}
  {%- if p.get('finish') == 'days_since' or p.kind in property_time_bucket_kinds() -%}{{ return('integer') }}
  {%- elif p.kind in ('event_count', 'unique_count') -%}{{ return('bigint') }}
  {%- elif p.kind in ('aggregate', 'first_value', 'last_value') and p.property == 'event_at' -%}{{ return('timestamp') }}
  {%- elif p.kind == 'aggregate' -%}{{ return(cohortflow_money_sum_type()) }}
  {%- else -%}{{ return('varchar') }}
  {%- endif -%}
{%- endmacro %}


{#- Typed numeric columns of int_events_as_of: written as text by property_value_text. -#}
{% macro property_numeric_columns() -%}
  {{- return(['price', 'quantity', 'revenue']) -}}
{%- endmacro %}


{#-
  A value as text that DuckDB and Postgres write alike. Numbers go through decimal(38, 6) (exact for the
  money types, macros/money.sql; a double is rounded to 6 decimals) and lose trailing zeros ('80',
  '31.25', '-7.5', '0', '0.3'): a bare cast writes 80.0 on DuckDB and 80 on Postgres for a double, and
  80.000000 for a decimal(18, 6).
  Timestamps are 'YYYY-MM-DD HH:MM:SS[.ffffff]', booleans 'true' / 'false' on both.
-#}
{% macro property_value_text(expression, data_type) -%}
  {%- set data_type = (data_type or '') | lower -%}
  {%- if data_type in ('double', 'double precision', 'float', 'float8', 'real', 'numeric', 'decimal') or data_type.startswith('decimal') or data_type.startswith('numeric') -%}
    rtrim(rtrim(cast(cast({{ expression }} as decimal(38, 6)) as varchar), '0'), '.')
  {%- else -%}
    cast({{ expression }} as varchar)
  {%- endif -%}
{%- endmacro %}


{#- SQL for the property's value on one event: the raw expression (numeric for aggregates). -#}
{% macro property_value_sql(p) -%}
  {%- if p.property == 'event_at' and p.kind in ('aggregate', 'first_value', 'last_value') -%}
    {#- the time itself: min / max / first / last of event_at are timestamps (property_data_type) -#}
    {{- event_property_sql(p.property) -}}
  {%- elif p.kind == 'aggregate' -%}
    {{- event_property_sql(p.property, numeric=true) -}}
  {%- elif p.property in property_numeric_columns() -%}
    {{- property_value_text(p.property, cohortflow_money_type()) -}}
  {%- elif p.property in ('event_at', 'session_id') -%}
    {#- typed, not text: as text for most_frequent / unique_list (string_agg needs text on Postgres) -#}
    {{- property_value_text(p.property, 'timestamp' if p.property == 'event_at' else 'bigint') -}}
  {%- else -%}
    {{- event_property_sql(p.property) -}}
  {%- endif -%}
{%- endmacro %}


{#- 'a', 'b', 'c' -#}
{% macro sql_literal_list(values) -%}
  {%- for v in values -%}{{ sql_literal(v) }}{{ ', ' if not loop.last }}{%- endfor -%}
{%- endmacro %}


{#- SQL boolean: the event matches the property's event types, window and predicates. -#}
{% macro property_condition_sql(p) -%}
  {%- if p.events[0] == '*' -%}{%- set event_condition = 'true' -%}
  {%- else -%}{%- set event_condition = 'event_type in (' ~ sql_literal_list(p.events) ~ ')' -%}
  {%- endif -%}
  ({{ event_condition }} and {{ window_sql(p.within, 'event_at', 'first_seen_at') }} and {{ predicates_sql(p.where) }})
{%- endmacro %}


{#- What a user without a matching event gets (SQL), or none for NULL. -#}
{% macro property_empty_value(p) -%}
  {%- if p.kind in ('event_count', 'unique_count') or (p.kind == 'aggregate' and p.function == 'sum') -%}
    {{- return('0') -}}
  {%- endif -%}
  {{- return(none) -}}
{%- endmacro %}


{#-
  The property's value (SQL) from its aggregated column: days_since turns the latest matching event_at
  into whole 24-hour periods to as_of, floor(elapsed seconds / 86400), the rule of
  user_properties.days_since_last_active (seconds with the fraction, not a count of day boundaries).
  Other properties are the column itself.
-#}
{% macro property_finish_sql(p, column) -%}
  {%- if p.get('finish') == 'days_since' -%}
    {{- return('floor(' ~ cohortflow_seconds_between(column, as_of()) ~ ' / 86400)') -}}
  {%- endif -%}
  {{- return(column) -}}
{%- endmacro %}


{#- preferred_hour / preferred_day_of_week: the hour (0-23) / ISO day (1-7) of event_at in UTC or in the user's zone. -#}
{% macro property_time_bucket_sql(p) -%}
  {%- set at = cohortflow_utc_to_local('event_at', 'user_time_zone') if p.time_zone == 'user' else 'event_at' -%}
  {%- if p.kind == 'preferred_hour' -%}{{ cohortflow_hour(at) }}{%- else -%}{{ cohortflow_iso_day_of_week(at) }}{%- endif -%}
{%- endmacro %}


{#- The unit a preferred_* property counts: an order (order_id, else the line itself: int_orders' rule) or a session. -#}
{% macro property_unit_key_sql(p) -%}
  {%- if p.unit == 'orders' -%}coalesce(order_id, event_id)
  {%- else -%}session_id
  {%- endif -%}
{%- endmacro %}


{#-
  FROM clause over the events, joined to the users only when a within_first window needs first_seen_at.
  Each part of computed_properties reads the events itself instead of sharing a CTE: DuckDB materialises
  a CTE read more than once (a copy of every event, JSON included), which cost more than the scans.
  `time_zones` (a relation of user_id, time_zone; none = not needed) adds the column user_time_zone:
  the user's zone, 'UTC' for a user without a row.
-#}
{% macro property_events_from(events, users, needs_first_seen, time_zones=none) -%}
  {%- if needs_first_seen or time_zones is not none -%}
  from (
        select
            events.*
            {%- if needs_first_seen %},
            users_first_seen.first_seen_at
            {%- endif %}
            {%- if time_zones is not none %},
            coalesce(user_time_zones.time_zone, 'UTC') as user_time_zone
            {%- endif %}
        from {{ events }} as events
        {%- if needs_first_seen %}
        inner join {{ users }} as users_first_seen on events.user_id = users_first_seen.user_id
        {%- endif %}
        {%- if time_zones is not none %}
        left join {{ time_zones }} as user_time_zones on events.user_id = user_time_zones.user_id
        {%- endif %}
    ) as events
  {%- else -%}
  from {{ events }} as events
  {%- endif %}
{%- endmacro %}


{#-
  Compile a list of property declarations into one select: one row per user of `users` (which must
  have user_id and first_seen_at), one column per property, in the order given.

  events: a relation with int_events_as_of's columns (default ref('int_events_as_of'));
  users:  the population (default ref('int_users_seen')). Users without events get the empty values.
  time_zones: (user_id, time_zone) for the properties with time_zone='user' (default
          ref('int_user_time_zones'), referenced only when such a property exists); every time_zone
          must be a zone name the engine knows; a user without a row is read in UTC.
-#}
{% macro computed_properties(properties, events=none, users=none, time_zones=none) -%}
  {#- The project's own events may be read through the per-day state (macros/daily_state.sql). -#}
  {%- set use_state = events is none and daily_state_available('int_events_as_of') -%}
  {%- set events = events if events is not none else ref('int_events_as_of') -%}
  {%- set users = users if users is not none else ref('int_users_seen') -%}

  {%- if properties is mapping or properties is string or properties is not iterable or properties | length == 0 -%}
    {{- cohortflow_fail('computed_properties(properties)', "expected a non-empty list of property declarations") -}}
  {%- endif -%}
  {%- set names = [] -%}
  {%- for p in properties -%}
    {%- if p is not mapping or not p.get('is_computed_property') -%}
      {{- cohortflow_fail('computed_properties(properties)', "item " ~ loop.index ~ " is not a property declaration (event_count(...), aggregate(...), ...): " ~ (p | string)) -}}
    {%- endif -%}
    {%- if p.name in names or p.name == 'user_id' -%}
      {{- cohortflow_fail('computed_properties(properties)', "property '" ~ p.name ~ "' is defined twice (or is user_id)") -}}
    {%- endif -%}
    {%- do names.append(p.name) -%}
    {#- Its event types and properties must be in the tracking plan (tracking_plan.sql; compile time only). -#}
    {%- do tracking_plan_check_property_declaration(p) -%}
  {%- endfor -%}
  {%- if properties | selectattr('time_zone', 'defined') | selectattr('time_zone', 'equalto', 'user') | list -%}
    {%- set time_zones = time_zones if time_zones is not none else ref('int_user_time_zones') -%}
  {%- endif -%}
  {%- set from_state = [] -%}
  {%- if use_state -%}
    {#- The declarations go to config.meta so that the state model keeps their per-day state. -#}
    {%- do config(meta={'computed_properties': properties}) -%}
    {%- for p in properties if computed_property_state(p) is not none -%}{%- do from_state.append(p) -%}{%- endfor -%}
  {%- endif -%}

  {#- First / last value are aggregates too (arg_min / arg_max). Distinct counts get their own distinct
      subquery: DuckDB's count(distinct) filter (...) inside the grouped scan was ~4x slower. -#}
  {%- set grouped_kinds = ['event_count', 'aggregate', 'first_value', 'last_value'] -%}
  {%- set read_events = properties | reject('in', from_state) | list -%}
  {%- set grouped = read_events | selectattr('kind', 'in', grouped_kinds) | list -%}
  {%- set ranked = read_events | rejectattr('kind', 'in', grouped_kinds) | list -%}
  {%- set needs_first_seen = grouped | selectattr('within.kind', 'equalto', 'within_first') | list | length > 0 -%}
  {%- set all_events = [] -%}
  {%- for p in grouped -%}{%- for e in p.events -%}{%- do all_events.append(e) -%}{%- endfor -%}{%- endfor -%}

with property_users as (

    select user_id, first_seen_at
    from {{ users }}

)
{%- if grouped %},

-- One pass over the events for every event count / aggregate / first / last property (conditional
-- aggregation). First / last: the value at the smallest / largest (event_at, event_id), NULLs skipped.
grouped_properties as (

    select
        user_id
        {%- for p in grouped %},
        {% if p.kind == 'event_count' -%}
        count(*) filter (where {{ property_condition_sql(p) }})
        {%- elif p.kind == 'first_value' -%}
        {{ cohortflow_arg_min(property_value_sql(p), '(event_at, event_id)', property_condition_sql(p)) }}
        {%- elif p.kind == 'last_value' -%}
        {{ cohortflow_arg_max(property_value_sql(p), '(event_at, event_id)', property_condition_sql(p)) }}
        {%- elif p.function == 'avg' -%}
        {#- Exact: the decimal sum over the count of values, rounded half away from zero to 6 places
            (avg() would be a double on DuckDB). Both engines compute each aggregate once. -#}
        {{ cohortflow_exact_divide(
            'sum(' ~ property_value_sql(p) ~ ') filter (where ' ~ property_condition_sql(p) ~ ')',
            'count(' ~ property_value_sql(p) ~ ') filter (where ' ~ property_condition_sql(p) ~ ')') }}
        {%- else -%}
        {{ p.function }}({{ property_value_sql(p) }}) filter (where {{ property_condition_sql(p) }})
        {%- endif %} as {{ p.name }}
        {%- endfor %}

    {{ property_events_from(events, users, needs_first_seen) }}
    {%- if '*' not in all_events %}
    where event_type in ({{ sql_literal_list(all_events | unique | list) }})
    {%- endif %}
    group by user_id

)
{%- endif %}
{%- for p in ranked %},

{{ p.name }}_values as (
    {%- if p.kind == 'most_frequent' %}

    -- {{ p.label }}: the most frequent non-NULL value; ties go to the alphabetically first.
    select user_id, property_value
    from (
        select
            user_id,
            property_value,
            row_number() over (partition by user_id order by value_count desc, property_value) as value_rank
        from (
            select user_id, {{ property_value_sql(p) }} as property_value, count(*) as value_count
            {{ property_events_from(events, users, p.within.kind == 'within_first') }}
            where {{ property_condition_sql(p) }}
              and {{ property_value_sql(p) }} is not null
            group by user_id, {{ property_value_sql(p) }}
        ) as counted_values
    ) as ranked_values
    where value_rank = 1
    {%- elif p.kind in property_time_bucket_kinds() %}

    -- {{ p.label }}: the {{ 'hour of the day' if p.kind == 'preferred_hour' else 'ISO day of the week' }}
    -- ({{ "each user's own zone" if p.time_zone == 'user' else 'UTC' }}) with the most {{ p.unit }}; ties go to the earliest.
    {%- if p.unit != 'events' %}
    -- A unit counts once in every {{ 'hour' if p.kind == 'preferred_hour' else 'day' }} one of its matching events fell in.
    {%- endif %}
    select user_id, property_value
    from (
        select
            user_id,
            property_value,
            row_number() over (partition by user_id order by unit_count desc, property_value) as value_rank
        from (
            select user_id, property_value, count(*) as unit_count
            from (
                select {% if p.unit != 'events' %}distinct {% endif %}user_id, {{ property_time_bucket_sql(p) }} as property_value
                {%- if p.unit != 'events' %}, {{ property_unit_key_sql(p) }} as unit_key{% endif %}
                {{ property_events_from(events, users, p.within.kind == 'within_first', time_zones if p.time_zone == 'user' else none) }}
                where {{ property_condition_sql(p) }}
                {%- if p.unit == 'sessions' %}
                  and session_id is not null
                {%- endif %}
            ) as units
            group by user_id, property_value
        ) as counted_units
    ) as ranked_units
    where value_rank = 1
    {%- else %}

    {% if p.kind == 'unique_count' -%}
    -- {{ p.label }}: how many distinct non-NULL values.
    select user_id, count(*) as property_value
    {%- else -%}
    -- {{ p.label }}: the distinct non-NULL values, sorted and ','-joined.
    select user_id, {{ dbt.listagg('property_value', "','", 'order by property_value') }} as property_value
    {%- endif %}
    from (
        select distinct user_id, {{ property_value_sql(p) }} as property_value
        {{ property_events_from(events, users, p.within.kind == 'within_first') }}
        where {{ property_condition_sql(p) }}
          and {{ property_value_sql(p) }} is not null
    ) as distinct_values
    group by user_id
    {%- endif %}

)
{%- endfor %}
{%- for p in from_state %},

{{ p.name }}_values as (
{{ computed_property_state_sql(p, time_zones=time_zones) }}
)
{%- endfor %}

select
    property_users.user_id
    {%- for p in properties %},
    {%- set column = ('grouped_properties.' ~ p.name) if p in grouped else (p.name ~ '_values.property_value') -%}
    {%- set empty = property_empty_value(p) %}
    {%- set column = property_finish_sql(p, column) %}
    cast({% if empty is not none %}coalesce({{ column }}, {{ empty }}){% else %}{{ column }}{% endif %} as {{ property_data_type(p) }}) as {{ p.name }}
    {%- endfor %}

from property_users
{%- if grouped %}
left join grouped_properties on property_users.user_id = grouped_properties.user_id
{%- endif %}
{%- for p in ranked + from_state %}
left join {{ p.name }}_values on property_users.user_id = {{ p.name }}_values.user_id
{%- endfor %}
{%- endmacro %}


{#-
  The contract columns of a model (name -> data_type, in YAML order), read from the graph. Lets a model
  follow another's contract without typing the names twice. Empty while parsing (no graph yet).
-#}
{% macro contract_columns(model_name) -%}
  {%- if not execute -%}{{ return([]) }}{%- endif -%}
  {%- set node = graph.nodes.get('model.' ~ project_name ~ '.' ~ model_name) -%}
  {%- if node is none -%}
    {{- cohortflow_fail('contract_columns(model_name)', "no model named " ~ model_name) -}}
  {%- endif -%}
  {%- set columns = [] -%}
  {%- for column in node.columns.values() -%}
    {%- if not column.data_type -%}
      {{- cohortflow_fail('contract_columns(' ~ model_name ~ ')', "column " ~ column.name ~ " has no data_type in its YAML") -}}
    {%- endif -%}
    {%- do columns.append({'name': column.name, 'data_type': column.data_type}) -%}
  {%- endfor -%}
  {{- return(columns) -}}
{%- endmacro %}


{#-
  Data test for a long form: `model` has exactly one (user_id, property) row per row of `wide_model`
  and contract column (except user_id and computed_at), and its value is NULL exactly where the wide
  value is. Returns the rows that are missing or unexpected.
-#}
{% test unpivots_every_column_of(model, wide_model) %}
  {%- set columns = contract_columns(wide_model.identifier) | rejectattr('name', 'in', ['user_id', 'computed_at']) | list -%}
with expected as (
  {%- for column in columns %}
    select user_id, cast('{{ column.name }}' as varchar) as property, ({{ column.name }} is null) as is_value_null
    from {{ wide_model }}
    {%- if not loop.last %}
    union all
    {%- endif %}
  {%- else %}
    select cast(null as varchar) as user_id, cast(null as varchar) as property, true as is_value_null
    where false
  {%- endfor %}
),

actual as (
    select user_id, property, (value is null) as is_value_null
    from {{ model }}
),

missing as (
    select * from expected
    except
    select * from actual
),

unexpected as (
    select * from actual
    except
    select * from expected
)

select 'missing' as problem, missing.* from missing
union all
select 'unexpected' as problem, unexpected.* from unexpected
{% endtest %}
