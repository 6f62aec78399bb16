-- What the recommendation assets learn from: every event up to as_of with the item it names (the
-- `item_id` column, or another property from event_properties when a declaration's item_property
-- says so). A view: the assets read only the event types their declarations weigh.
{{ config(materialized='view') }}

select
    user_id,
    event_type,
    event_at,
    item_id,
    cast(event_properties as varchar) as event_properties

from {{ ref('int_events_as_of') }}
