-- Per user: the category they buy most, else (never bought anything with a category) the one they
-- view most. Ties go to the alphabetically first category so the answer is stable.
-- Purchase lines are counted as sent; cancellations do not change what a user likes to browse and buy.
-- Counts come from the per-day state (macros/daily_state.sql): per user, day and category.

with category_counts as (

    select user_id, property_value as category, sum(value_count) as purchase_count, 0 as view_count
    from ({{ daily_state_window_values(builtin_states().purchased_categories, ever()) }}) as purchased
    group by user_id, property_value

    union all

    select user_id, property_value as category, 0 as purchase_count, sum(value_count) as view_count
    from ({{ daily_state_window_values(builtin_states().viewed_categories, ever()) }}) as viewed
    group by user_id, property_value

),

per_category as (

    select user_id, category, sum(purchase_count) as purchase_count, sum(view_count) as view_count
    from category_counts
    group by user_id, category

),

scored as (

    select
        user_id,
        category,
        case
            when max(purchase_count) over (partition by user_id) > 0 then purchase_count
            else view_count
        end as score
    from per_category

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
