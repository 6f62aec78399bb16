-- One row per user: the latest known value of each attribute from raw.users.
-- An identify that sets only `country` must not erase an earlier email, so "latest" is taken per
-- attribute, among the updates that set it. Time-independent (see docs/dbt.md: attributes are not
-- versioned by as_of; only behaviour is).

with source as (

    select * from {{ source('raw', 'users') }}

),

renamed as (

    select
        user_id,
        nullif(lower(trim(user_properties ->> 'email')), '') as email,
        nullif(trim(user_properties ->> 'phone'), '') as phone,
        nullif(trim(user_properties ->> 'country'), '') as country,
        -- The user's own time zone as sent (an IANA name such as 'Asia/Tokyo'), not checked here:
        -- int_user_time_zones ignores a name the engine does not know and falls back to the country.
        nullif(trim(user_properties ->> 'time_zone'), '') as time_zone,
        {{ cohortflow_try_cast("trim(user_properties ->> 'has_marketing_consent')", 'boolean') }} as has_marketing_consent,
        -- ISO-8601 text, possibly with an offset: read as timestamptz, keep the UTC wall clock.
        {{ cohortflow_try_cast("trim(user_properties ->> 'created_at')", 'timestamp_utc') }} as created_at,
        updated_at,
        -- A total order of updates: ties on updated_at fall back to ingest order.
        row_number() over (
            partition by user_id
            order by updated_at, ingested_at, source_file, source_row
        ) as update_sequence

    from source

)

select
    user_id,
    {{ cohortflow_arg_max('email', 'update_sequence') }} as email,
    {{ cohortflow_arg_max('phone', 'update_sequence') }} as phone,
    {{ cohortflow_arg_max('country', 'update_sequence') }} as country,
    {{ cohortflow_arg_max('time_zone', 'update_sequence') }} as time_zone,
    -- Opt-in only: a user who never stated consent has none.
    coalesce(
        {{ cohortflow_arg_max('has_marketing_consent', 'update_sequence') }},
        false
    ) as has_marketing_consent,
    {{ cohortflow_arg_max('created_at', 'update_sequence') }} as created_at,
    max(updated_at) as updated_at

from renamed
group by user_id
