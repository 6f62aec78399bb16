-- Intent: fail when country_time_zones maps a country to a zone the engine does not know (a typo, or a
-- name one engine lacks): such a country would silently fall back to UTC (int_user_time_zones).
select country_time_zones.country, country_time_zones.time_zone
from {{ ref('country_time_zones') }} as country_time_zones
where lower(country_time_zones.time_zone) not in (
    select lower(zone_names.name) from {{ cohortflow_time_zone_names() }} as zone_names
)
