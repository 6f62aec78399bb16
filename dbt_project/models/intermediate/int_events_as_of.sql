-- The events visible at as_of: the single place where the future is cut off, so every model
-- downstream can be recomputed for any past moment. A table because five models read it.
{{ config(materialized='table') }}

select *
from {{ ref('stg_events') }}
where event_at <= {{ as_of() }}
