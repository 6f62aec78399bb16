{#-
  The tracking plan: every event type the project knows and, per event type, its properties with a type
  and a description (what Amplitude / Segment call a tracking plan or event schema). It lives in the YAML
  of the model `tracking_plan` (models/staging/tracking_plan.yml, under config.meta.tracking_plan):

      events:
        purchase:
          description: One purchased line.
          properties:
            price: {type: number, description: Unit price.}

  dbt macros cannot read files or macro properties, but they can read the graph when `execute` is true,
  so the checks below read the plan from graph.nodes['model.<project>.tracking_plan'] at compile time.
  cohort() and computed_properties() call them for every event type and property a condition or a
  property names: an unknown one stops the build with "<model>: <argument>: unknown event type 'purchse'
  (not in the tracking plan, models/staging/tracking_plan.yml; did you mean 'purchase'?)".

  - Built-in event columns (tracking_plan_builtin_properties()) are always known properties.
  - A property is known when one of the condition's event types declares it (any event type for '*').
  - While parsing (execute is false) and inside dbt unit tests (the graph is empty there) nothing is
    checked: the same models are checked when they compile for a run / build / compile / docs.
  - A project without a tracking_plan model fails at compile time instead of skipping the checks.

  `cohortflow tracking-plan draft` writes the plan from the events in the warehouse; the Python loader
  (cohortflow/tracking_plan.py) checks the same shape for ingest and the CLI.
-#}

{#- The typed columns of int_events_as_of that a property may name, with their plan type. -#}
{% macro tracking_plan_builtin_properties() -%}
  {{- return({'event_id': 'string', 'user_id': 'string', 'device_id': 'string', 'event_type': 'string',
              'event_at': 'timestamp', 'session_id': 'integer', 'item_id': 'string', 'category': 'string',
              'price': 'number', 'quantity': 'number', 'revenue': 'number', 'order_id': 'string'}) -}}
{%- endmacro %}


{% macro tracking_plan_types() -%}
  {{- return(['string', 'number', 'integer', 'boolean', 'timestamp', 'object', 'array']) -}}
{%- endmacro %}


{#- Where the plan is declared, for messages: the model's YAML file. -#}
{% macro tracking_plan_file(node) -%}
  {%- set patch = node.get('patch_path') or node.get('original_file_path') or 'tracking_plan.yml' -%}
  {{- return(patch.split('://')[-1]) -}}
{%- endmacro %}


{#- A plan's type (a name or a list of names) as a list. -#}
{% macro tracking_plan_type_list(value) -%}
  {{- return([value] if value is string else (value | list)) -}}
{%- endmacro %}


{#-
  The plan as a dict {'events': {event_type: {'description', 'properties': {name: {'type', ...}}}},
  'file': the YAML's path}, or none when there is no graph to read (parse time, unit tests).
  `argument` names what asked, for the error when the project has no plan.
-#}
{% macro tracking_plan(argument='tracking_plan()') -%}
  {%- if not execute or graph is not mapping or 'nodes' not in graph -%}{{ return(none) }}{%- endif -%}
  {%- set node = graph.nodes.get('model.' ~ project_name ~ '.tracking_plan') -%}
  {%- if node is none -%}
    {{- cohortflow_fail(argument, "no tracking plan: this project has no model named tracking_plan (cohorts and "
        ~ "properties check event types and properties against its YAML, config.meta.tracking_plan; "
        ~ "`cohortflow tracking-plan draft` writes one, see docs/properties.md)") -}}
  {%- endif -%}
  {%- set file = tracking_plan_file(node) -%}
  {%- set plan = (node.config.meta or {}).get('tracking_plan') -%}
  {%- set where = file ~ ": config.meta.tracking_plan" -%}
  {%- if plan is not mapping -%}
    {{- exceptions.raise_compiler_error(where ~ ": expected a mapping with events, got " ~ (plan | string)) -}}
  {%- endif -%}
  {%- for key in plan -%}
    {%- if key != 'events' -%}
      {{- exceptions.raise_compiler_error(where ~ "." ~ key ~ ": unknown key '" ~ key ~ "' (the plan has events only)") -}}
    {%- endif -%}
  {%- endfor -%}
  {%- set events = plan.get('events') or {} -%}
  {%- if events is not mapping -%}
    {{- exceptions.raise_compiler_error(where ~ ".events: expected a mapping of event type -> {description, properties}") -}}
  {%- endif -%}
  {%- for event_type in events -%}
    {%- set event = events[event_type] -%}
    {%- set at = where ~ ".events." ~ event_type -%}
    {%- if event is not mapping -%}
      {{- exceptions.raise_compiler_error(at ~ ": expected a mapping (description, properties), got " ~ (event | string)) -}}
    {%- endif -%}
    {%- do tracking_plan_check_keys(event, ['description', 'properties', 'drafted', 'seen'], at) -%}
    {%- set properties = event.get('properties') or {} -%}
    {%- if properties is not mapping -%}
      {{- exceptions.raise_compiler_error(at ~ ".properties: expected a mapping of property name -> {type, description}") -}}
    {%- endif -%}
    {%- for name in properties -%}
      {%- set spec = properties[name] -%}
      {%- set at_property = at ~ ".properties." ~ name -%}
      {%- if spec is not mapping or 'type' not in spec -%}
        {{- exceptions.raise_compiler_error(at_property ~ ": expected a mapping with a type (" ~ tracking_plan_types() | join(', ') ~ ")") -}}
      {%- endif -%}
      {%- do tracking_plan_check_keys(spec, ['type', 'description', 'drafted', 'seen'], at_property) -%}
      {%- for type in tracking_plan_type_list(spec['type']) -%}
        {%- if type not in tracking_plan_types() -%}
          {%- set close = cohortflow_closest_name(type ~ '', tracking_plan_types()) -%}
          {{- exceptions.raise_compiler_error(at_property ~ ".type: unknown type '" ~ type ~ "' ("
              ~ ("did you mean '" ~ close ~ "'?" if close else "use one of " ~ tracking_plan_types() | join(', ')) ~ ")") -}}
        {%- endif -%}
      {%- endfor -%}
    {%- endfor -%}
  {%- endfor -%}
  {{- return({'events': events, 'file': file}) -}}
{%- endmacro %}


{% macro tracking_plan_check_keys(mapping, allowed, at) -%}
  {%- for key in mapping -%}
    {%- if key not in allowed -%}
      {%- set close = cohortflow_closest_name(key ~ '', allowed) -%}
      {{- exceptions.raise_compiler_error(at ~ "." ~ key ~ ": unknown key '" ~ key ~ "' ("
          ~ ("did you mean '" ~ close ~ "'?" if close else "use " ~ allowed | join(', ')) ~ ")") -}}
    {%- endif -%}
  {%- endfor -%}
{%- endmacro %}


{#- The properties a plan declares for `events` (a list; [] or ['*'] = any event type): name -> [types]. -#}
{% macro tracking_plan_properties_of(plan, events) -%}
  {%- set any_event = events | length == 0 or '*' in events -%}
  {%- set declared = {} -%}
  {%- for event_type in plan.events -%}
    {%- if any_event or event_type in events -%}
      {%- set properties = plan.events[event_type].get('properties') or {} -%}
      {%- for name in properties -%}
        {%- set types = declared.get(name, []) -%}
        {%- for type in tracking_plan_type_list(properties[name]['type']) -%}
          {%- if type not in types -%}{%- do types.append(type) -%}{%- endif -%}
        {%- endfor -%}
        {%- do declared.update({name: types}) -%}
      {%- endfor -%}
    {%- endif -%}
  {%- endfor -%}
  {{- return(declared) -}}
{%- endmacro %}


{#- "did you mean 'x'?" for the closest candidate, else the candidates themselves (at most 12). -#}
{% macro tracking_plan_hint(name, candidates, what) -%}
  {%- set close = cohortflow_closest_name(name, candidates) -%}
  {%- if close is not none -%}{{- return("did you mean '" ~ close ~ "'?") -}}{%- endif -%}
  {%- set known = candidates | unique | sort | list -%}
  {%- if known | length == 0 -%}{{- return("the plan declares no " ~ what) -}}{%- endif -%}
  {{- return("known " ~ what ~ ": " ~ known[:12] | join(', ') ~ (", ..." if known | length > 12 else "")) -}}
{%- endmacro %}


{#- Fail unless every event type in `events` ([] or ['*'] = any event) is in the plan. -#}
{% macro tracking_plan_check_events(events, argument) -%}
  {%- set plan = tracking_plan(argument) -%}
  {%- if plan is none -%}{{- return(none) -}}{%- endif -%}
  {%- for event_type in events -%}
    {%- if event_type != '*' and event_type not in plan.events -%}
      {{- cohortflow_fail(argument, "unknown event type '" ~ event_type ~ "' (not in the tracking plan, " ~ plan.file ~ "; "
          ~ tracking_plan_hint(event_type, plan.events | list, 'event types') ~ ")") -}}
    {%- endif -%}
  {%- endfor -%}
{%- endmacro %}


{#-
  Fail unless `property` is a built-in column or declared for one of `events` ([] or ['*'] = any). With
  `numeric` (aggregate / total), a declared property must also be a number or integer for some of them.
-#}
{% macro tracking_plan_check_property(property, events, argument, numeric=false) -%}
  {%- if property in tracking_plan_builtin_properties() -%}{{- return(none) -}}{%- endif -%}
  {%- set plan = tracking_plan(argument) -%}
  {%- if plan is none -%}{{- return(none) -}}{%- endif -%}
  {%- set any_event = events | length == 0 or '*' in events -%}
  {%- set declared = tracking_plan_properties_of(plan, events) -%}
  {%- set of = 'any event type' if any_event else events | join(', ') -%}
  {%- if property not in declared -%}
    {%- set elsewhere = [] -%}
    {%- for event_type in plan.events -%}
      {%- if property in (plan.events[event_type].get('properties') or {}) -%}{%- do elsewhere.append(event_type) -%}{%- endif -%}
    {%- endfor -%}
    {%- if elsewhere -%}
      {%- set hint = "it is declared for " ~ elsewhere | join(', ') -%}
    {%- else -%}
      {%- set hint = tracking_plan_hint(property, (declared | list) + (tracking_plan_builtin_properties() | list), 'properties of ' ~ of) -%}
    {%- endif -%}
    {{- cohortflow_fail(argument, "unknown property '" ~ property ~ "' of " ~ of ~ " (not in the tracking plan, "
        ~ plan.file ~ "; " ~ hint ~ ")") -}}
  {%- endif -%}
  {%- if numeric and not (declared[property] | select('in', ['number', 'integer']) | list) -%}
    {{- cohortflow_fail(argument, "'" ~ property ~ "' is " ~ declared[property] | join(' | ') ~ " in the tracking plan ("
        ~ plan.file ~ "); a sum, min, max or average needs a number or integer property") -}}
  {%- endif -%}
{%- endmacro %}


{#- Check every event type and property a cohort's conditions name (cohort(), cohort_compiler.sql). -#}
{% macro tracking_plan_check_cohort(clauses) -%}
  {%- if not execute -%}{{- return(none) -}}{%- endif -%}
  {%- for clause in clauses -%}
    {%- for c in clause.orClauses -%}
      {%- if c.type == 'performed' -%}
        {%- set label = "performed('" ~ (c.events | join("', '") if c.events else '*') ~ "')" -%}
        {%- do tracking_plan_check_events(c.events, label ~ " event") -%}
        {%- for p in c.where -%}
          {%- do tracking_plan_check_property(p.property, c.events, label ~ " where('" ~ p.property ~ "')") -%}
        {%- endfor -%}
        {%- if c.measure.kind in ('total', 'distinct') -%}
          {%- do tracking_plan_check_property(c.measure.property, c.events,
                 label ~ " " ~ c.measure.kind ~ "('" ~ c.measure.property ~ "')", numeric=(c.measure.kind == 'total')) -%}
        {%- endif -%}
      {%- elif c.type == 'sequence' -%}
        {%- for s in c.steps + ([c.then_not] if c.then_not is not none else []) -%}
          {%- set is_then_not = c.then_not is not none and loop.last -%}
          {%- set label = "sequence() " ~ ('then_not' if is_then_not else 'step') ~ "('" ~ (s.events | join("', '") if s.events else '*') ~ "')" -%}
          {%- do tracking_plan_check_events(s.events, label ~ " event") -%}
          {%- for p in s.where -%}
            {%- do tracking_plan_check_property(p.property, s.events, label ~ " where('" ~ p.property ~ "')") -%}
          {%- endfor -%}
        {%- endfor -%}
      {%- endif -%}
    {%- endfor -%}
  {%- endfor -%}
{%- endmacro %}


{#- Check the event types and properties of one computed-property declaration (computed_properties()). -#}
{% macro tracking_plan_check_property_declaration(p) -%}
  {%- if not execute -%}{{- return(none) -}}{%- endif -%}
  {%- do tracking_plan_check_events(p.events, p.label ~ " event") -%}
  {%- if p.property is not none -%}
    {%- do tracking_plan_check_property(p.property, p.events, p.label ~ " property", numeric=(p.kind == 'aggregate')) -%}
  {%- endif -%}
  {%- for w in p.where -%}
    {%- do tracking_plan_check_property(w.property, p.events, p.label ~ " where('" ~ w.property ~ "')") -%}
  {%- endfor -%}
{%- endmacro %}


{#-
  The tracking_plan model's SQL: one row per event type (property NULL) and per property, with the type
  as text ('number | string' for several) and the description. Empty while parsing.
-#}
{% macro tracking_plan_table() -%}
  {%- set plan = tracking_plan('tracking_plan model') -%}
  {%- set rows = [] -%}
  {%- if plan is not none -%}
    {%- for event_type in plan.events -%}
      {%- set event = plan.events[event_type] -%}
      {%- do rows.append([event_type, none, none, event.get('description')]) -%}
      {%- set properties = event.get('properties') or {} -%}
      {%- for name in properties -%}
        {%- do rows.append([event_type, name, tracking_plan_type_list(properties[name]['type']) | join(' | '),
                            properties[name].get('description')]) -%}
      {%- endfor -%}
    {%- endfor -%}
  {%- endif -%}
  {%- for row in rows %}
select
    {%- for column in ['event_type', 'property', 'data_type', 'description'] %}
    cast({{ 'null' if (row[loop.index0] is none or row[loop.index0] == '') else sql_string(row[loop.index0]) }} as varchar) as {{ column }}{{ ',' if not loop.last }}
    {%- endfor %}
{{ 'union all' if not loop.last }}
  {%- else %}
select
    cast(null as varchar) as event_type,
    cast(null as varchar) as property,
    cast(null as varchar) as data_type,
    cast(null as varchar) as description
where false
  {%- endfor %}
{%- endmacro %}


{#-
  Edit distance (optimal string alignment): insertions, deletions, substitutions and swaps of two
  neighbouring characters cost 1 each. Jinja has no difflib; names are short, so the O(n*m) table is cheap.
-#}
{% macro cohortflow_edit_distance(a, b) -%}
  {%- set a = a ~ '' -%}
  {%- set b = b ~ '' -%}
  {%- set ns = namespace(before=[], previous=range(b | length + 1) | list) -%}
  {%- for i in range(1, a | length + 1) -%}
    {%- set current = [i] -%}
    {%- for j in range(1, b | length + 1) -%}
      {%- set cost = 0 if a[i - 1] == b[j - 1] else 1 -%}
      {%- set best = [ns.previous[j] + 1, current[j - 1] + 1, ns.previous[j - 1] + cost] | min -%}
      {%- if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1] -%}
        {%- set best = [best, ns.before[j - 2] + 1] | min -%}
      {%- endif -%}
      {%- do current.append(best) -%}
    {%- endfor -%}
    {%- set ns.before = ns.previous -%}
    {%- set ns.previous = current -%}
  {%- endfor -%}
  {{- return(ns.previous[b | length]) -}}
{%- endmacro %}


{#-
  The candidate closest to `name` (case-insensitive; ties: alphabetically first) when it is close, i.e.
  at most max(1, len(name) // 3) edits away; else a candidate that starts with the name (order ->
  order_id); else none.
-#}
{% macro cohortflow_closest_name(name, candidates) -%}
  {%- set wanted = (name ~ '') | lower -%}
  {%- set ns = namespace(best=none, distance=none, prefixed=none) -%}
  {%- for candidate in candidates | unique | sort -%}
    {%- set distance = cohortflow_edit_distance(wanted, candidate | lower) -%}
    {%- if ns.distance is none or distance < ns.distance -%}
      {%- set ns.best = candidate -%}
      {%- set ns.distance = distance -%}
    {%- endif -%}
    {%- if ns.prefixed is none and wanted | length > 0 and (candidate | lower).startswith(wanted) -%}
      {%- set ns.prefixed = candidate -%}
    {%- endif -%}
  {%- endfor -%}
  {%- if ns.best is not none and ns.distance <= [1, (wanted | length) // 3] | max -%}{{- return(ns.best) -}}{%- endif -%}
  {{- return(ns.prefixed) -}}
{%- endmacro %}
