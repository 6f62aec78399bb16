-- The tracking plan as a table: one row per event type (property NULL) and one per property, with the
-- type and the description. The plan itself is this model's YAML (tracking_plan.yml, config.meta.
-- tracking_plan); cohort and property macros read it from the graph at compile time and fail on an event
-- type or property it does not know (macros/tracking_plan.sql). `cohortflow tracking-plan draft` writes it
-- from raw.events. Reads no source: the table changes when the YAML does.
{{ tracking_plan_table() }}
