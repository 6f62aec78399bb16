-- The catalogue the recommendation assets choose from: each item's latest known name, category,
-- price and stock state (stg_items), plus every item that events name but the catalogue lacks
-- (recommendable, with no attributes; never out of stock by default).
{{ config(materialized='view') }}

with catalogue as (

    select item_id, item_name, category, price, is_in_stock
    from {{ ref('stg_items') }}

),

named_by_events as (

    select distinct item_id
    from {{ ref('int_events') }}
    where item_id is not null

)

select
    coalesce(c.item_id, e.item_id) as item_id,
    c.item_name,
    c.category,
    cast(c.price as double precision) as price,
    coalesce(c.is_in_stock, true) as is_in_stock

from catalogue as c
full outer join named_by_events as e
    on e.item_id = c.item_id
