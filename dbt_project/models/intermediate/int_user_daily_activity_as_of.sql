-- int_user_daily_activity as it was at as_of: the stored rows of the days before as_of's day, and
-- the as_of day itself recomputed from its events up to as_of (a day cut in two by as_of cannot be
-- read from a whole-day row). Days after as_of do not exist. Summing any additive column over this
-- view gives the lifetime value at as_of; session_count and order_count are per day (a session or
-- order crossing midnight counts on both days), so use int_events_as_of for exact distinct counts.

with complete_days as (

    select
        user_id,
        activity_date,
        event_count,
        session_count,
        session_start_count,
        view_item_count,
        add_to_cart_count,
        purchase_count,
        cancel_purchase_count,
        start_subscription_count,
        cancel_subscription_count,
        order_count,
        purchase_revenue,
        cancelled_revenue,
        first_event_at,
        last_event_at

    from {{ ref('int_user_daily_activity') }}
    where activity_date < cast({{ as_of() }} as date)

),

as_of_day as (

    select
        user_id,
        cast(event_at as date) as activity_date,
        {{ user_daily_activity_measures() }}

    from {{ ref('int_events_as_of') }}
    where event_at >= cast(cast({{ as_of() }} as date) as timestamp)
    group by user_id, cast(event_at as date)

)

select * from complete_days
union all
select * from as_of_day
