-- Every country a source sends -> its main IANA time zone: ISO 3166 alpha-2 codes and the country names
-- of Online Retail ('United Kingdom', 'EIRE', 'RSA', ...). The rows live in macros/time_zones.sql
-- (country_time_zone_rows()), not in a dbt seed, so that a plain `dbt run` builds it too.
-- int_user_time_zones uses it for users without a known time_zone attribute of their own.
{{ country_time_zones_table() }}
