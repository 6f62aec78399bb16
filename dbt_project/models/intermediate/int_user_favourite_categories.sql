-- Per user: the category they buy most, else (never bought anything with a category) the one they
-- view most. Ties go to the alphabetically first category so the answer is stable.
-- Purchase lines are counted as sent; cancellations do not change what a user likes to browse and buy.

with category_counts as (

    select
        user_id,
        category,
        count(*) filter (where event_type = 'purchase') as purchase_count,
        count(*) filter (where event_type = 'view_item') as view_count

    from {{ ref('int_events_as_of') }}
    where category is not null
      and event_type in ('purchase', 'view_item')
    group by user_id, category

),

scored as (

    select
        user_id,
        category,
        -- Views only decide for users without a categorised purchase; they never break a purchase tie.
        case
            when max(purchase_count) over (partition by user_id) > 0 then purchase_count
            else view_count
        end as score

    from category_counts

),

ranked as (

    select
        user_id,
        category,
        row_number() over (partition by user_id order by score desc, category) as category_rank

    from scored

)

select
    user_id,
    category as favourite_category

from ranked
where category_rank = 1
