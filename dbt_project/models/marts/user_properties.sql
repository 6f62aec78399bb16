-- One row per user known at as_of with their attributes and computed properties: what syncs,
-- the profile API and ML features read. Every count is 0 (not NULL) for a user who never did it;
-- values that have no meaning without activity (averages, favourites, hours) stay NULL.
-- The built-ins come from the int_user_* aggregates; the one-line computed properties from
-- int_user_computed_properties, whose contract columns are copied here by name (no list typed twice).

with users_seen as (

    select * from {{ ref('int_users_seen') }}

),

attributes as (

    select * from {{ ref('stg_users') }}

),

activity as (

    select * from {{ ref('int_user_activity_aggregated') }}

),

purchases as (

    select * from {{ ref('int_user_purchases_aggregated') }}

),

favourite_categories as (

    select * from {{ ref('int_user_favourite_categories') }}

),

rfm_scores as (

    select * from {{ ref('int_user_rfm_scores') }}

),

time_zones as (

    select * from {{ ref('int_user_time_zones') }}

),

computed_properties as (

    select * from {{ ref('int_user_computed_properties') }}

)

select
    cast(users_seen.user_id as varchar) as user_id,
    cast(attributes.email as varchar) as email,
    cast(attributes.phone as varchar) as phone,
    cast(attributes.country as varchar) as country,
    -- The zone of the local-time properties: a user without attributes is read in UTC there too.
    cast(coalesce(time_zones.time_zone, 'UTC') as varchar) as time_zone,
    cast(coalesce(attributes.has_marketing_consent, false) as boolean) as has_marketing_consent,
    cast(users_seen.first_seen_at as timestamp) as first_seen_at,
    cast(users_seen.last_seen_at as timestamp) as last_seen_at,
    -- Whole 24-hour periods of elapsed time, so "< N" agrees with the half-open N-day windows: active
    -- in (as_of - N days, as_of] <=> days_since_last_active < N. Elapsed seconds with the fraction, not
    -- dbt.datediff's count of second boundaries (which would put 86,399.5 s at one whole day).
    cast(floor({{ cohortflow_seconds_between('users_seen.last_seen_at', as_of()) }} / 86400) as integer)
        as days_since_last_active,
    cast(coalesce(activity.event_count_30d, 0) as bigint) as event_count_30d,
    cast(coalesce(activity.session_count_30d, 0) as bigint) as session_count_30d,
    cast(coalesce(purchases.order_count, 0) as bigint) as order_count,
    -- Money is exact (macros/money.sql): decimal(38, 6) sums, never doubles.
    cast(coalesce(purchases.revenue_lifetime, 0) as {{ cohortflow_money_sum_type() }}) as revenue_lifetime,
    cast(coalesce(purchases.revenue_90d, 0) as {{ cohortflow_money_sum_type() }}) as revenue_90d,
    -- Net revenue per order, exactly, rounded half away from zero to the cent; NULL without orders
    -- rather than a misleading 0.
    cast({{ cohortflow_exact_divide('purchases.revenue_lifetime', 'purchases.order_count', 2) }} as {{ cohortflow_money_sum_type() }})
        as average_order_value,
    cast(favourite_categories.favourite_category as varchar) as favourite_category,
    cast(activity.preferred_hour_of_day as integer) as preferred_hour_of_day,
    cast(activity.preferred_day_of_week as integer) as preferred_day_of_week,
    cast(rfm_scores.last_ordered_at as timestamp) as last_ordered_at,
    cast(rfm_scores.recency_score as integer) as recency_score,
    cast(rfm_scores.frequency_score as integer) as frequency_score,
    cast(rfm_scores.monetary_score as integer) as monetary_score,
    cast(rfm_scores.rfm_segment as varchar) as rfm_segment,
    {%- for column in contract_columns('int_user_computed_properties') if column.name != 'user_id' %}
    computed_properties.{{ column.name }},
    {%- endfor %}
    cast({{ as_of() }} as timestamp) as computed_at

from users_seen
left join attributes on users_seen.user_id = attributes.user_id
left join activity on users_seen.user_id = activity.user_id
left join purchases on users_seen.user_id = purchases.user_id
left join favourite_categories on users_seen.user_id = favourite_categories.user_id
left join rfm_scores on users_seen.user_id = rfm_scores.user_id
left join time_zones on users_seen.user_id = time_zones.user_id
left join computed_properties on users_seen.user_id = computed_properties.user_id
