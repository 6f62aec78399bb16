-- One row per raw event: renamed, typed, with the product's event properties pulled out of JSON.
-- Not filtered by as_of (staging is time-independent); int_events_as_of applies the cut-off.
-- A view: the only reader is the incremental int_events, whose `ingested_at` filter DuckDB and
-- Postgres push down to the raw scan, so an hourly run parses the JSON of the new rows only.

with source as (

    select * from {{ source('raw', 'events') }}

),

extracted as (

    select
        source.*,
        -- One JSON parse per row for all six keys (cross_db/d_json_fields.sql); element i = key i.
        {{ cohortflow_json_text_fields(
            'event_properties', ['item_id', 'category', 'price', 'quantity', 'revenue', 'order_id']) }}
            as property_values

    from source

),

renamed as (

    select
        event_id,
        -- Anonymous events carry only device_id; it is the user until an identity merge exists.
        coalesce(user_id, device_id) as user_id,
        device_id,
        event_type,
        event_time as event_at,
        -- Amplitude sends -1 for "no session".
        nullif(session_id, -1) as session_id,
        nullif(trim(property_values[1]), '') as item_id,
        nullif(trim(property_values[2]), '') as category,
        -- Money and quantities are exact decimals (macros/money.sql) read from the JSON text, never
        -- through a double: 6 decimal places, more rounded half away from zero, NULL when not a number.
        {{ cohortflow_try_cast(cohortflow_json_number_text('event_properties', 'price', 'property_values[3]'), 'decimal') }} as price,
        {{ cohortflow_try_cast(cohortflow_json_number_text('event_properties', 'quantity', 'property_values[4]'), 'decimal') }} as quantity,
        {{ cohortflow_try_cast(cohortflow_json_number_text('event_properties', 'revenue', 'property_values[5]'), 'decimal') }} as sent_revenue,
        nullif(trim(property_values[6]), '') as order_id,
        event_properties,
        ingested_at

    from extracted

)

select
    event_id,
    user_id,
    device_id,
    event_type,
    event_at,
    session_id,
    item_id,
    category,
    cast(price as {{ cohortflow_money_type() }}) as price,
    cast(quantity as {{ cohortflow_money_type() }}) as quantity,
    -- Revenue only means something on purchase lines; sources that omit it get price x quantity
    -- (negative for cancellations, whose quantity is negative), multiplied exactly and rounded to 6
    -- places (the 128-bit sum type holds the product; decimal(18, 6) x decimal(18, 6) would not).
    cast(case
        when event_type in ('purchase', 'cancel_purchase')
            then coalesce(sent_revenue, {{ cohortflow_to_money('cast(price as ' ~ cohortflow_money_sum_type() ~ ') * quantity') }})
    end as {{ cohortflow_money_type() }}) as revenue,
    order_id,
    event_properties,
    ingested_at

from renamed
