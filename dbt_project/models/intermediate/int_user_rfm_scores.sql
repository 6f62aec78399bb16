-- RFM scores for every user with at least one order at as_of: recency (when they last ordered),
-- frequency (how many orders) and monetary value (net lifetime revenue), each 1-5 by quintile.
--
-- score = ceil(5 * k / n), where n = users with an order and k = those whose value is at or below
-- this user's (for recency: whose last order is at or before this user's). So the top fifth scores 5,
-- users with equal values always share a score (the higher one), and a lone buyer scores 555.
-- Integer counts and a cast to double keep it exact and portable (no ntile, whose ties are arbitrary).
-- Monetary ranks the exact net revenue (a decimal, macros/money.sql): no float noise can split a tie.

with orders_per_user as (

    select
        user_id,
        max(ordered_at) as last_ordered_at

    from {{ ref('int_orders') }}
    group by user_id

),

buyers as (

    select
        orders_per_user.user_id,
        orders_per_user.last_ordered_at,
        purchases.order_count,
        purchases.revenue_lifetime

    from orders_per_user
    inner join {{ ref('int_user_purchases_aggregated') }} as purchases
        on orders_per_user.user_id = purchases.user_id

),

ranked as (

    select
        user_id,
        last_ordered_at,
        order_count,
        revenue_lifetime,
        count(*) over () as buyer_count,
        -- The default frame (range ... current row) includes peers: k counts every tie.
        count(*) over (order by last_ordered_at) as recency_at_or_below,
        count(*) over (order by order_count) as frequency_at_or_below,
        count(*) over (order by revenue_lifetime) as monetary_at_or_below

    from buyers

),

scored as (

    select
        user_id,
        last_ordered_at,
        cast(ceil(cast(5 * recency_at_or_below as double precision) / buyer_count) as integer) as recency_score,
        cast(ceil(cast(5 * frequency_at_or_below as double precision) / buyer_count) as integer) as frequency_score,
        cast(ceil(cast(5 * monetary_at_or_below as double precision) / buyer_count) as integer) as monetary_score

    from ranked

)

select
    user_id,
    last_ordered_at,
    recency_score,
    frequency_score,
    monetary_score,
    cast(recency_score as varchar) || cast(frequency_score as varchar) || cast(monetary_score as varchar)
        as rfm_segment

from scored
