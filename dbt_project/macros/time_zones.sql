{#-
  Users' time zones: which zone the local-time properties (preferred_hour / preferred_day_of_week with
  time_zone='user', macros/properties.sql) read a user's events in.

  A user's zone is, in this order:
    1. their own `time_zone` attribute (raw.users user_properties.time_zone, stg_users.time_zone) when it
       names a zone the engine knows (an IANA name such as 'Asia/Tokyo'; compared case-insensitively,
       written as the engine spells it). An unknown name ('Mars/Olympus_Mons', 'GMT+25', '') is ignored,
       never an error;
    2. else the main zone of their country (country_time_zone_rows() below: ISO 3166 alpha-2 codes and the
       country names Online Retail uses, compared case-insensitively);
    3. else 'UTC'.

  country_time_zones_table() renders the mapping as the model staging.country_time_zones, and
  cohortflow_resolve_time_zones(users, country_time_zones) applies the rule to any relation with
  user_id, time_zone and country (int_user_time_zones; the macro tests feed it seeds).
-#}

{#-
  Country -> its main IANA zone (the zone most of its people live in: one per country, so the United
  States are America/New_York and Australia Australia/Sydney). Codes: every code the demo generator
  emits (cohortflow/generate.py) and the codes of the Online Retail countries; names: every country of
  Online Retail's data set as written there ('EIRE', 'RSA', 'USA', 'Channel Islands', ...).
  'Unspecified' is UTC on purpose, like a user without a country; 'European Community' is Brussels.
  Add a row when a source sends another country; assert_country_time_zones_are_known fails if a zone
  is not known to the engine.
-#}
{% macro country_time_zone_rows() -%}
  {{- return([
      ('AE', 'Asia/Dubai'), ('United Arab Emirates', 'Asia/Dubai'),
      ('AT', 'Europe/Vienna'), ('Austria', 'Europe/Vienna'),
      ('AU', 'Australia/Sydney'), ('Australia', 'Australia/Sydney'),
      ('BE', 'Europe/Brussels'), ('Belgium', 'Europe/Brussels'),
      ('BH', 'Asia/Bahrain'), ('Bahrain', 'Asia/Bahrain'),
      ('BR', 'America/Sao_Paulo'), ('Brazil', 'America/Sao_Paulo'),
      ('CA', 'America/Toronto'), ('Canada', 'America/Toronto'),
      ('CH', 'Europe/Zurich'), ('Switzerland', 'Europe/Zurich'),
      ('CY', 'Asia/Nicosia'), ('Cyprus', 'Asia/Nicosia'),
      ('CZ', 'Europe/Prague'), ('Czech Republic', 'Europe/Prague'),
      ('DE', 'Europe/Berlin'), ('Germany', 'Europe/Berlin'),
      ('DK', 'Europe/Copenhagen'), ('Denmark', 'Europe/Copenhagen'),
      ('ES', 'Europe/Madrid'), ('Spain', 'Europe/Madrid'),
      ('FI', 'Europe/Helsinki'), ('Finland', 'Europe/Helsinki'),
      ('FR', 'Europe/Paris'), ('France', 'Europe/Paris'),
      ('GB', 'Europe/London'), ('United Kingdom', 'Europe/London'),
      ('GG', 'Europe/Guernsey'), ('JE', 'Europe/Jersey'), ('Channel Islands', 'Europe/Jersey'),
      ('GR', 'Europe/Athens'), ('Greece', 'Europe/Athens'),
      ('HK', 'Asia/Hong_Kong'), ('Hong Kong', 'Asia/Hong_Kong'),
      ('IE', 'Europe/Dublin'), ('EIRE', 'Europe/Dublin'),
      ('IL', 'Asia/Jerusalem'), ('Israel', 'Asia/Jerusalem'),
      ('IS', 'Atlantic/Reykjavik'), ('Iceland', 'Atlantic/Reykjavik'),
      ('IT', 'Europe/Rome'), ('Italy', 'Europe/Rome'),
      ('JP', 'Asia/Tokyo'), ('Japan', 'Asia/Tokyo'),
      ('KR', 'Asia/Seoul'),
      ('LB', 'Asia/Beirut'), ('Lebanon', 'Asia/Beirut'),
      ('LT', 'Europe/Vilnius'), ('Lithuania', 'Europe/Vilnius'),
      ('MT', 'Europe/Malta'), ('Malta', 'Europe/Malta'),
      ('NL', 'Europe/Amsterdam'), ('Netherlands', 'Europe/Amsterdam'),
      ('NO', 'Europe/Oslo'), ('Norway', 'Europe/Oslo'),
      ('PL', 'Europe/Warsaw'), ('Poland', 'Europe/Warsaw'),
      ('PT', 'Europe/Lisbon'), ('Portugal', 'Europe/Lisbon'),
      ('SA', 'Asia/Riyadh'), ('Saudi Arabia', 'Asia/Riyadh'),
      ('SE', 'Europe/Stockholm'), ('Sweden', 'Europe/Stockholm'),
      ('SG', 'Asia/Singapore'), ('Singapore', 'Asia/Singapore'),
      ('US', 'America/New_York'), ('USA', 'America/New_York'),
      ('ZA', 'Africa/Johannesburg'), ('RSA', 'Africa/Johannesburg'),
      ('European Community', 'Europe/Brussels'),
      ('Unspecified', 'UTC'),
  ]) -}}
{%- endmacro %}


{#- The mapping as a select of (country, time_zone); a country listed twice (in any case) fails. -#}
{% macro country_time_zones_table() -%}
  {%- set seen = [] -%}
  {%- for country, time_zone in country_time_zone_rows() -%}
    {%- if country | lower in seen -%}
      {{- cohortflow_fail('country_time_zone_rows()', "country '" ~ country ~ "' is listed twice (countries are compared case-insensitively)") -}}
    {%- endif -%}
    {%- do seen.append(country | lower) -%}
  {%- endfor -%}
  {%- for country, time_zone in country_time_zone_rows() %}
select cast({{ sql_string(country) }} as varchar) as country, cast({{ sql_string(time_zone) }} as varchar) as time_zone
{{ 'union all' if not loop.last }}
  {%- endfor %}
{%- endmacro %}


{#-
  One row per user of `users` (user_id, time_zone, country: text, either may be NULL) with the zone the
  local-time properties use: (user_id, time_zone, time_zone_source). time_zone is never NULL and always a
  name the engine knows; time_zone_source says which rule gave it: 'user' (their own attribute),
  'country' (their country's main zone) or 'default' (UTC: neither is known). `country_time_zones` is a
  relation of (country, time_zone) such as staging.country_time_zones. Subqueries, no WITH, so that the
  select can be inlined as a relation: computed_properties(..., time_zones='(' ~ this ~ ')').
-#}
{% macro cohortflow_resolve_time_zones(users, country_time_zones) -%}
select
    users.user_id,
    cast(coalesce(own_zone.time_zone, country_zone.time_zone, 'UTC') as varchar) as time_zone,
    cast(case
        when own_zone.time_zone is not null then 'user'
        when country_zone.time_zone is not null then 'country'
        else 'default'
    end as varchar) as time_zone_source
from {{ users }} as users
left join (
    {{ cohortflow_known_time_zones_sql() }}
) as own_zone
    on own_zone.zone_key = lower(trim(users.time_zone))
left join (
    -- The mapping's zone only when the engine knows it (a typo there must not break the build either).
    select lower(trim(country_map.country)) as country_key, min(known_zones.time_zone) as time_zone
    from {{ country_time_zones }} as country_map
    inner join (
        {{ cohortflow_known_time_zones_sql() }}
    ) as known_zones
        on known_zones.zone_key = lower(trim(country_map.time_zone))
    group by lower(trim(country_map.country))
) as country_zone
    on country_zone.country_key = lower(trim(users.country))
{%- endmacro %}


{#- (zone_key: the lower-cased name, time_zone: the name as the engine spells it), one row per key. -#}
{% macro cohortflow_known_time_zones_sql() -%}
select lower(zone_names.name) as zone_key, min(zone_names.name) as time_zone
        from {{ cohortflow_time_zone_names() }} as zone_names
        group by lower(zone_names.name)
{%- endmacro %}
