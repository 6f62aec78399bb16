{#-
  The cohort language: condition constructors. Each returns a small dict (the spec); `cohort()`
  (cohort_compiler.sql) turns an AND of them into SQL. Windows and predicates come from windows.sql.

      {{ cohort(all_of=[
           performed('add_to_cart', within=last(24, 'hours')),
           did_not_perform('purchase', within=last(24, 'hours')),
      ]) }}

  Conditions
    performed(event, where=[], measure=count(), operator='>=', value=1, within=ever())
        event: an event_type, a list of them, or '*' (any event).
        measure: count() | total('revenue') | distinct('item_id') | on_distinct_days() | nth_time(n)
        operator: = != > >= < <=  (not with nth_time: "the Nth time fell in the window")
    did_not_perform(event, where=[], within=ever())          = negate(performed(event, ...))
    had_been_active(within, measure=count(), operator='>=', value=1, where=[])  = performed('*', ...)
    had_been_new(within)                                     first seen (int_users_seen) in the window
    sequence([step(event, where=[]), ...], within=ever(), completed_within=none, then_not=none)
        steps strictly in time order; completed_within=duration(n, unit) bounds first-to-last step;
        then_not=event (or step(...)): no such event after the sequence completed.
    user_property(property, operator, value=none, using='most_recent' | 'any_in_window', within=none)
        attribute updates (raw.users) at or before as_of: the latest value that was set, or any value
        set inside the window.
    computed_property(column, operator, value=none)          a column of marts.user_properties
    in_cohort(model_name) / not_in_cohort(model_name)        membership of another cohort model
    in_uploaded_cohort(cohort_id) / not_in_uploaded_cohort(cohort_id)
                                                             membership of a cohort uploaded through the
                                                             Cohort API (int_uploaded_cohort_members)
    had_propensity(prediction, measure, operator, value)     a prediction's current score (macros/predictions.sql)
    any_of([condition, ...])                                 OR-group (an item of all_of)
    negate(condition or any_of)                              NOT

  Every argument is checked here, at parse time; a wrong one stops dbt with
  "<model>: <argument>: <message>" (cohortflow_fail). Event types and properties are checked against the
  tracking plan when the cohort compiles (cohort() -> tracking_plan_check_cohort, tracking_plan.sql).
-#}

{#- ------------------------------------------------------------------ measures -------------------- -#}

{% macro count() -%}
  {{- return({'kind': 'count'}) -}}
{%- endmacro %}


{% macro total(property) -%}
  {%- do cohortflow_check_property_name(property, 'total(property)') -%}
  {%- if property == 'event_at' -%}
    {{- cohortflow_fail('total(property)', "event_at is a timestamp; total needs a number") -}}
  {%- elif tracking_plan_builtin_properties().get(property) == 'string' -%}
    {{- cohortflow_fail('total(property)', property ~ " is text; total needs a number") -}}
  {%- endif -%}
  {{- return({'kind': 'total', 'property': property}) -}}
{%- endmacro %}


{% macro distinct(property) -%}
  {%- do cohortflow_check_property_name(property, 'distinct(property)') -%}
  {{- return({'kind': 'distinct', 'property': property}) -}}
{%- endmacro %}


{#- "Count in interval": at least once on each of N distinct (UTC) days. -#}
{% macro on_distinct_days() -%}
  {{- return({'kind': 'on_distinct_days'}) -}}
{%- endmacro %}


{#- "Historical count": the user's Nth occurrence ever (counted from their first) lies in the window. -#}
{% macro nth_time(n) -%}
  {%- if n is not number or n != (n | int) or n < 1 -%}
    {{- cohortflow_fail('nth_time(n)', (n | string) ~ " must be a whole number >= 1") -}}
  {%- endif -%}
  {{- return({'kind': 'nth_time', 'n': n | int}) -}}
{%- endmacro %}


{#- A length of time (for sequence(completed_within=...)): a positive amount of minutes / hours / days / weeks. -#}
{% macro duration(amount, unit='days') -%}
  {{- return({'kind': 'duration', 'amount': cohortflow_window_amount(amount, 'duration(amount)'),
              'unit': cohortflow_window_unit(unit, 'duration(unit)')}) -}}
{%- endmacro %}


{#- ------------------------------------------------------------------ conditions ------------------ -#}

{% macro performed(event=none, where=none, measure=none, operator=none, value=none, within=none) -%}
  {%- set label = "performed(" ~ (event | string) ~ ")" -%}
  {%- set events = cohortflow_check_events(event, label ~ " event") -%}
  {%- set label = "performed('" ~ events | join("', '") ~ "')" -%}
  {%- set measure = measure if measure is not none else count() -%}
  {%- if measure is not mapping or measure.get('kind') not in ('count', 'total', 'distinct', 'on_distinct_days', 'nth_time') -%}
    {{- cohortflow_fail(label ~ " measure", "unknown measure " ~ (measure | string)
        ~ " (use count(), total(property), distinct(property), on_distinct_days() or nth_time(n))") -}}
  {%- endif -%}
  {%- if measure.kind == 'nth_time' -%}
    {%- if operator is not none or value is not none -%}
      {{- cohortflow_fail(label ~ " operator", "nth_time(n) takes no operator or value: the Nth occurrence lies in the window or not") -}}
    {%- endif -%}
  {%- else -%}
    {%- set operator = operator if operator is not none else '>=' -%}
    {%- set value = value if value is not none else 1 -%}
    {%- do check_operator(operator, label ~ " operator") -%}
    {%- if value is not number or value is sameas true or value is sameas false -%}
      {{- cohortflow_fail(label ~ " value", "must be a number, got " ~ (value | string)) -}}
    {%- endif -%}
    {%- if measure.kind != 'total' and value < 0 -%}
      {{- cohortflow_fail(label ~ " value", (value | string) ~ " is negative; a " ~ measure.kind ~ " never is") -}}
    {%- endif -%}
    {%- do cohortflow_check_number(value, label ~ " value") -%}
  {%- endif -%}
  {{- return({'type': 'performed', 'negated': false, 'events': events,
              'where': cohortflow_check_predicates(where, label ~ " where"),
              'measure': measure, 'operator': operator, 'value': value,
              'within': cohortflow_check_window(within, label ~ " within")}) -}}
{%- endmacro %}


{% macro did_not_perform(event=none, where=none, within=none) -%}
  {{- return(negate(performed(event, where=where, within=within))) -}}
{%- endmacro %}


{#- Active = any event. Amplitude's "_active" event. -#}
{% macro had_been_active(within=none, measure=none, operator=none, value=none, where=none) -%}
  {{- return(performed('*', where=where, measure=measure, operator=operator, value=value, within=within)) -}}
{%- endmacro %}


{% macro had_been_new(within=none) -%}
  {%- set window = cohortflow_check_window(within, 'had_been_new() within') -%}
  {%- if window.kind in ('within_first', 'ever') -%}
    {{- cohortflow_fail('had_been_new() within', "needs last(...), since(...) or between(...): every user is new within their own first days") -}}
  {%- endif -%}
  {{- return({'type': 'had_been_new', 'negated': false, 'within': window}) -}}
{%- endmacro %}


{% macro step(event=none, where=none) -%}
  {%- set events = cohortflow_check_events(event, "step(" ~ (event | string) ~ ") event") -%}
  {{- return({'events': events, 'where': cohortflow_check_predicates(where, "step('" ~ events | join("', '") ~ "') where")}) -}}
{%- endmacro %}


{% macro sequence(steps=none, within=none, completed_within=none, then_not=none) -%}
  {%- if steps is string or steps is mapping or steps is not iterable or steps | length == 0 -%}
    {{- cohortflow_fail('sequence(steps)', "needs a list of step(...), got " ~ (steps | string)) -}}
  {%- endif -%}
  {%- set checked = [] -%}
  {%- for s in steps -%}
    {%- if s is string -%}{%- do checked.append(step(s)) -%}
    {%- elif s is mapping and 'events' in s and 'where' in s -%}{%- do checked.append(s) -%}
    {%- else -%}
      {{- cohortflow_fail('sequence(steps)', "step " ~ loop.index ~ " is not an event name or step(...): " ~ (s | string)) -}}
    {%- endif -%}
  {%- endfor -%}
  {%- if then_not is string -%}{%- set then_not = step(then_not) -%}{%- endif -%}
  {%- if then_not is not none and not (then_not is mapping and 'events' in then_not) -%}
    {{- cohortflow_fail('sequence(then_not)', "needs an event name or step(...), got " ~ (then_not | string)) -}}
  {%- endif -%}
  {%- if checked | length < 2 and then_not is none -%}
    {{- cohortflow_fail('sequence(steps)', "needs at least two steps (or one step and then_not); for one event use performed()") -}}
  {%- endif -%}
  {%- if completed_within is not none and not (completed_within is mapping and completed_within.get('kind') == 'duration') -%}
    {{- cohortflow_fail('sequence(completed_within)', "needs duration(n, unit), got " ~ (completed_within | string)) -}}
  {%- endif -%}
  {{- return({'type': 'sequence', 'negated': false, 'steps': checked,
              'within': cohortflow_check_window(within, 'sequence() within'),
              'completed_within': completed_within, 'then_not': then_not}) -}}
{%- endmacro %}


{% macro user_property(property=none, operator=none, value=none, using='most_recent', within=none) -%}
  {%- do cohortflow_check_property_name(property, 'user_property(property)') -%}
  {%- set label = "user_property('" ~ property ~ "')" -%}
  {%- set predicate = cohortflow_check_value_predicate(property, operator, value, label) -%}
  {%- if using not in ('most_recent', 'any_in_window') -%}
    {{- cohortflow_fail(label ~ " using", "'" ~ (using | string) ~ "' is not most_recent or any_in_window") -}}
  {%- endif -%}
  {%- if using == 'most_recent' and within is not none -%}
    {{- cohortflow_fail(label ~ " within", "most_recent reads the latest value at as_of; a window needs using='any_in_window'") -}}
  {%- endif -%}
  {{- return({'type': 'user_property', 'negated': false, 'property': property,
              'operator': predicate.operator, 'value': predicate.value, 'using': using,
              'within': cohortflow_check_window(within, label ~ " within")}) -}}
{%- endmacro %}


{% macro computed_property(column=none, operator=none, value=none) -%}
  {%- if column is not string or modules.re.match('^[a-z_][a-z0-9_]*$', column) is none -%}
    {{- cohortflow_fail('computed_property(column)', "needs a lower_snake_case column of user_properties, got " ~ (column | string)) -}}
  {%- endif -%}
  {%- set predicate = cohortflow_check_value_predicate(column, operator, value, "computed_property('" ~ column ~ "')") -%}
  {{- return({'type': 'computed_property', 'negated': false, 'column': column,
              'operator': predicate.operator, 'value': predicate.value}) -}}
{%- endmacro %}


{% macro in_cohort(model_name=none) -%}
  {%- if model_name is not string or model_name | length == 0 -%}
    {{- cohortflow_fail('in_cohort(model_name)', "needs a cohort model name, got " ~ (model_name | string)) -}}
  {%- endif -%}
  {%- if model is defined and model is not none and model.name is defined and model.name == model_name -%}
    {{- cohortflow_fail('in_cohort(model_name)', "a cohort cannot refer to itself ('" ~ model_name ~ "')") -}}
  {%- endif -%}
  {{- return({'type': 'in_cohort', 'negated': false, 'cohort': model_name}) -}}
{%- endmacro %}


{% macro not_in_cohort(model_name=none) -%}
  {{- return(negate(in_cohort(model_name))) -}}
{%- endmacro %}


{#- An uploaded cohort is data, not a model: it is named by the cohort_id its upload answered with
    (GET /api/3/cohorts lists them, kind `uploaded`). An id that no upload created matches nobody. -#}
{% macro in_uploaded_cohort(cohort_id=none) -%}
  {%- if cohort_id is not string or modules.re.match('^[a-z][a-z0-9_]{0,62}$', cohort_id) is none -%}
    {{- cohortflow_fail('in_uploaded_cohort(cohort_id)', "needs the id of an uploaded cohort (lower-case letters, digits and _, as the upload answered), got " ~ (cohort_id | string)) -}}
  {%- endif -%}
  {{- return({'type': 'in_uploaded_cohort', 'negated': false, 'cohort_id': cohort_id}) -}}
{%- endmacro %}


{% macro not_in_uploaded_cohort(cohort_id=none) -%}
  {{- return(negate(in_uploaded_cohort(cohort_id))) -}}
{%- endmacro %}


{% macro any_of(conditions=none) -%}
  {%- if conditions is string or conditions is mapping or conditions is not iterable or conditions | length == 0 -%}
    {{- cohortflow_fail('any_of(conditions)', "needs a non-empty list of conditions, got " ~ (conditions | string)) -}}
  {%- endif -%}
  {%- for c in conditions -%}
    {%- if not cohortflow_is_condition(c) -%}
      {{- cohortflow_fail('any_of(conditions)', "item " ~ loop.index ~ " is not a condition (any_of cannot nest any_of): " ~ (c | string)) -}}
    {%- endif -%}
  {%- endfor -%}
  {{- return({'type': 'any_of', 'negated': false, 'conditions': conditions}) -}}
{%- endmacro %}


{% macro negate(condition=none) -%}
  {%- if not (cohortflow_is_condition(condition) or (condition is mapping and condition.get('type') == 'any_of')) -%}
    {{- cohortflow_fail('negate(condition)', "needs a condition or any_of(...), got " ~ (condition | string)) -}}
  {%- endif -%}
  {%- set flipped = {} -%}
  {%- do flipped.update(condition) -%}
  {%- do flipped.update({'negated': not condition.negated}) -%}
  {{- return(flipped) -}}
{%- endmacro %}


{#- ------------------------------------------------------------------ checks ---------------------- -#}

{% macro cohortflow_is_condition(value) -%}
  {{- return(value is mapping and value.get('type') in ('performed', 'had_been_new', 'sequence', 'user_property', 'computed_property', 'in_cohort', 'in_uploaded_cohort', 'had_propensity')) -}}
{%- endmacro %}


{#- An event name, a list of them, or '*' -> a list of event names ([] = any event). -#}
{% macro cohortflow_check_events(event, argument) -%}
  {%- if event == '*' -%}{{- return([]) -}}{%- endif -%}
  {%- set events = [event] if event is string else event -%}
  {%- if events is none or events is mapping or events is not iterable or events | length == 0 -%}
    {{- cohortflow_fail(argument, "needs an event name, a list of them or '*' (any event), got " ~ (event | string)) -}}
  {%- endif -%}
  {%- for e in events -%}
    {%- if e is not string or e | trim | length == 0 or e == '*' -%}
      {{- cohortflow_fail(argument, "needs an event name, a list of them or '*' (any event), got " ~ (event | string)) -}}
    {%- endif -%}
  {%- endfor -%}
  {{- return(events | list) -}}
{%- endmacro %}


{% macro cohortflow_check_property_name(property, argument) -%}
  {%- if property is not string or property | trim | length == 0 -%}
    {{- cohortflow_fail(argument, "needs a property name, got " ~ (property | string)) -}}
  {%- endif -%}
{%- endmacro %}


{% macro cohortflow_check_predicates(predicates, argument) -%}
  {%- set predicates = [] if predicates is none else ([predicates] if predicates is mapping else predicates) -%}
  {%- if predicates is string or predicates is not iterable -%}
    {{- cohortflow_fail(argument, "needs where(...) or a list of them, got " ~ (predicates | string)) -}}
  {%- endif -%}
  {%- for p in predicates -%}
    {%- if not (p is mapping and 'property' in p and 'operator' in p) -%}
      {{- cohortflow_fail(argument, "item " ~ loop.index ~ " is not a where(...): " ~ (p | string)) -}}
    {%- endif -%}
  {%- endfor -%}
  {{- return(predicates | list) -}}
{%- endmacro %}


{% macro cohortflow_check_window(window, argument) -%}
  {%- set window = window if window is not none else ever() -%}
  {%- if not is_window(window) -%}
    {{- cohortflow_fail(argument, "expected last(...), since(...), between(...), within_first(...) or ever(), got " ~ (window | string)) -}}
  {%- endif -%}
  {{- return(window) -}}
{%- endmacro %}


{#- A property comparison (same operators as where()). -#}
{% macro cohortflow_check_value_predicate(property, operator, value, label) -%}
  {%- set allowed = comparison_operators() + ['in', 'not_in', 'contains', 'is_null', 'is_not_null'] -%}
  {%- do check_operator(operator, label ~ " operator", allowed) -%}
  {%- if operator in ('in', 'not_in') and (value is string or value is mapping or value is not iterable) -%}
    {{- cohortflow_fail(label ~ " value", "operator " ~ operator ~ " needs a list of values") -}}
  {%- endif -%}
  {%- if operator not in ('is_null', 'is_not_null') and value is none -%}
    {{- cohortflow_fail(label ~ " value", "operator " ~ operator ~ " needs a value") -}}
  {%- endif -%}
  {%- for v in (value if operator in ('in', 'not_in') else [value]) -%}
    {%- do cohortflow_check_number(v, label ~ " value") -%}
  {%- endfor -%}
  {{- return({'operator': operator, 'value': value}) -}}
{%- endmacro %}


{#- as_of minus a duration, as 'YYYY-MM-DD HH:MM:SS' text for since() / between() defaults that follow as_of. -#}
{% macro cohort_as_of_minus(amount, unit='days') -%}
  {%- set unit = cohortflow_window_unit(unit, 'cohort_as_of_minus(unit)') -%}
  {%- set amount = cohortflow_window_amount(amount, 'cohort_as_of_minus(amount)') -%}
  {%- set moment = modules.datetime.datetime.strptime(as_of_utc(), '%Y-%m-%d %H:%M:%S.%f') -%}
  {%- set delta = modules.datetime.timedelta(**{unit ~ 's': amount}) -%}
  {{- return((moment - delta).strftime('%Y-%m-%d %H:%M:%S')) -}}
{%- endmacro %}
