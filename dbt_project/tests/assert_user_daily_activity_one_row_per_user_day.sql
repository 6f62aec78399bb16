-- int_user_daily_activity holds one row per (user_id, activity_date): a second row for a day would
-- mean an increment appended a day instead of replacing it, and lifetime sums would double-count.
select user_id, activity_date, count(*) as row_count
from {{ ref('int_user_daily_activity') }}
group by user_id, activity_date
having count(*) > 1
