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
        -- raw.items.price is a double (ingest writes it so): as an exact decimal with 6 places, which
        -- gives back the written price for any price below 10^9 with at most 6 decimals.
        {{ cohortflow_to_money('price') }} as price,
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
    {{ cohortflow_arg_max('item_name', 'update_sequence') }} as item_name,
    {{ cohortflow_arg_max('category', 'update_sequence') }} as category,
    {{ cohortflow_arg_max('price', 'update_sequence') }} as price,
    {{ cohortflow_arg_max('is_in_stock', 'update_sequence') }} as is_in_stock,
    {{ cohortflow_arg_max('item_properties', 'update_sequence') }} as item_properties,
    max(updated_at) as updated_at

from renamed
group by item_id
