-- The events visible at as_of: the single place where the future is cut off, so every model
-- downstream can be recomputed for any past moment.
-- A view over the incremental int_events: the as_of cut is a filter on a stored, typed table, so
-- nothing about as_of is ever stored and each reader scans only the columns it uses
-- (docs/benchmarks.md, segmentation: materialising it as a table cost more than the readers save).

select
    event_id,
    user_id,
    device_id,
    event_type,
    event_at,
    session_id,
    item_id,
    category,
    price,
    quantity,
    revenue,
    order_id,
    event_properties,
    ingested_at

from {{ ref('int_events') }}
where event_at <= {{ as_of() }}
