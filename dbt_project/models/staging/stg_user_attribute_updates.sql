-- One row per raw.users update (identify), in the order updates happened: the history that
-- user-property cohort conditions read ("most recent value" vs "any value in a window").
-- stg_users keeps only the latest value per attribute; this keeps every update. Not cut by as_of.

with source as (

    select * from {{ source('raw', 'users') }}

)

select
    user_id,
    user_properties,
    updated_at,
    -- A total order of updates per user: ties on updated_at fall back to ingest order (as in stg_users).
    row_number() over (
        partition by user_id
        order by updated_at, ingested_at, source_file, source_row
    ) as update_sequence

from source
