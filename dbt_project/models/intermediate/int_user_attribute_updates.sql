-- The attribute updates that had happened at as_of, so that user-property cohort conditions can be
-- recomputed for a past moment: "most recent value" is the latest update at or before as_of, "any
-- value in the window" looks at the updates inside it. (user_properties, built on stg_users, shows
-- the latest value known now; see docs/cohorts.md.)

select
    user_id,
    user_properties,
    updated_at,
    update_sequence

from {{ ref('stg_user_attribute_updates') }}
where updated_at <= {{ as_of() }}
