-- The time-zone rule (macros/time_zones.sql): a user's own zone when the engine knows it, else their
-- country's main zone, else UTC, on every engine.
{{ cohortflow_resolve_time_zones(ref('property_user_attributes'), ref('property_country_time_zones')) }}
