-- The catalogue the recommendation assets choose from: each item's latest known name, category,
-- price and stock state (stg_items), plus every item that events up to as_of name but the catalogue
-- lacks (recommendable, with no attributes; never out of stock by default). Not products at all —
-- fees, postage, vouchers, which the Online Retail loader marks category 'non_product' — are left
-- out: nobody should be recommended "DOTCOM POSTAGE".
{{ config(materialized='view') }}

with catalogue as (

    select item_id, item_name, category, price, is_in_stock
    from {{ ref('stg_items') }}
    where category is null or category <> 'non_product'

),

named_by_events as (

    select distinct item_id
    from {{ ref('int_events_as_of') }}
    where item_id is not null and (category is null or category <> 'non_product')

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
where coalesce(c.item_id, e.item_id) not in (
    select item_id from {{ ref('stg_items') }} where category = 'non_product'
)
