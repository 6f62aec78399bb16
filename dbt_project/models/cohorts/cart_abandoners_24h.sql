-- Added something to the cart in (as_of - 24 h, as_of] and made no purchase in that window
-- (Amplitude Activation's example "added to cart but did not purchase in the last 24 hours").
-- entered_at: the first add_to_cart in the window, the moment the user matched the rule.

with recent_cart_and_purchase_events as (

    select user_id, event_type, event_at
    from {{ ref('int_events_as_of') }}
    where event_type in ('add_to_cart', 'purchase')
      and {{ is_within_last('event_at', 24, 'hour') }}

),

per_user as (

    select
        user_id,
        min(event_at) filter (where event_type = 'add_to_cart') as first_added_to_cart_at,
        count(*) filter (where event_type = 'purchase') as purchase_count

    from recent_cart_and_purchase_events
    group by user_id

)

select
    cast(user_id as varchar) as user_id,
    cast(first_added_to_cart_at as timestamp) as entered_at

from per_user
where first_added_to_cart_at is not null
  and purchase_count = 0
