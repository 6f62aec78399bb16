-- One row per accepted change to an uploaded cohort (create, replace, add, remove), as the Cohort API
-- landed it. Not cut at as_of: int_uploaded_cohorts and int_uploaded_cohort_members do that.

with source as (

    select * from {{ source('uploaded_cohorts', 'uploaded_cohort_changes') }}

)

select
    cast(change_id as varchar) as change_id,
    cast(request_id as varchar) as request_id,
    cast(cohort_id as varchar) as cohort_id,
    cast(operation as varchar) as operation,
    nullif(trim(cohort_name), '') as cohort_name,
    nullif(trim(description), '') as description,
    nullif(trim(owner), '') as owner,
    cast(id_type as varchar) as id_type,
    cast(id_count as bigint) as id_count,
    cast(received_at as timestamp) as received_at,
    cast(change_sequence as bigint) as change_sequence,
    cast(requested_by as varchar) as requested_by

from source
