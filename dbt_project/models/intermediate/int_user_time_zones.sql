-- One row per user with attributes (stg_users): the time zone their local-time properties read events
-- in (preferred_hour / preferred_day_of_week with time_zone='user', macros/properties.sql). Their own
-- time_zone attribute when the engine knows the name, else their country's main zone
-- (country_time_zones), else UTC; an unknown name never breaks the build (macros/time_zones.sql).
-- Users without a stg_users row are UTC wherever this is read.
{{ cohortflow_resolve_time_zones(ref('stg_users'), ref('country_time_zones')) }}
