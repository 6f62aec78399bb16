-- One row per item: the latest known value of each catalogue attribute from raw.items
-- (Online Retail descriptions update only item_name, so "latest" is per attribute).

with source as (

    select * from {{ source('raw', 'items') }}

),

renamed as (

    select
        item_id,
        nullif(trim(item_name), '') as item_name,
        nullif(trim(category), '') as category,
        price,
        is_in_stock,
        item_properties,
        updated_at,
        row_number() over (
            partition by item_id
            order by updated_at, ingested_at, source_file, source_row
        ) as update_sequence

    from source

)

select
    item_id,
    arg_max(item_name, update_sequence) filter (where item_name is not null) as item_name,
    arg_max(category, update_sequence) filter (where category is not null) as category,
    arg_max(price, update_sequence) filter (where price is not null) as price,
    arg_max(is_in_stock, update_sequence) filter (where is_in_stock is not null) as is_in_stock,
    arg_max(item_properties, update_sequence) as item_properties,
    max(updated_at) as updated_at

from renamed
group by item_id
