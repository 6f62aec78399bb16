-- One row per id of a change to an uploaded cohort, as uploaded (the API checked its format).

with source as (

    select * from {{ source('uploaded_cohorts', 'uploaded_cohort_change_ids') }}

)

select
    cast(change_id as varchar) as change_id,
    cast(user_id as varchar) as user_id

from source
