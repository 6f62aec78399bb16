-- The macro tests' own tracking plan (tracking_plan.yml): the event types and properties the seeds and
-- test models use. Cohort and property macros check every name against it at compile time, here as in
-- dbt_project/ (the same macros); this model also renders it as a table, as the real one does.
{{ tracking_plan_table() }}
