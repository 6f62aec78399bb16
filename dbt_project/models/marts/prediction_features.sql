-- Point-in-time features for predictions: one row per user and cutoff. The scoring cutoff is as_of
-- itself; the training cutoffs are midnight of as_of's UTC day minus k x step days (k = 1 ..
-- prediction_cutoffs; vars in dbt_project.yml). A user has a row at a cutoff when they had an event
-- before it (at or before as_of for the scoring cutoff). docs/dbt.md, "Prediction features".
--
-- The one rule: a cutoff's row uses nothing that happened at or after it. Every cutoff reads the
-- per-day activity visible at as_of (int_user_daily_activity_as_of) up to its own last day:
--   training cutoff at midnight of day D: the days before D (an event exactly at midnight belongs to
--     the next period); a window of N days = the N calendar days D-N .. D-1;
--   scoring cutoff (as_of):               every visible day, the as_of day cut at as_of; a window of
--     N days = the as_of day (partial) and the N-1 days before it.
-- So every window spans N calendar days and `days_before` (last_day - activity_date) < N selects it.
-- All cutoffs are computed in one pass: the cutoffs are range-joined to the day rows and each
-- feature is one conditional aggregate over them (`days_before < N`). Recency uses exact timestamps
-- (first / last event of the day rows). The only read of events is the purchases' own times
-- (days_since_first/last_purchase), which the day rows do not keep: one scan of the purchase lines.
--
-- Money: revenue is summed exactly (decimal) and only then cast to double precision: features for
-- ML, not amounts to show or sync (those are in user_properties).

{%- set cutoff_count = var('prediction_cutoffs', 20) -%}
{%- set step_days = var('prediction_cutoff_step_days', 7) -%}
{%- if modules.re.match('^[0-9]+$', (cutoff_count ~ '') | trim) is none -%}
  {{ exceptions.raise_compiler_error("Invalid value for var 'prediction_cutoffs': '" ~ cutoff_count ~ "' (expected a whole number >= 0: how many training cutoffs before as_of)") }}
{%- endif -%}
{%- if modules.re.match('^[0-9]+$', (step_days ~ '') | trim) is none or (step_days | int) < 1 -%}
  {{ exceptions.raise_compiler_error("Invalid value for var 'prediction_cutoff_step_days': '" ~ step_days ~ "' (expected a whole number >= 1: days between training cutoffs)") }}
{%- endif -%}
{%- set cutoff_count = cutoff_count | int -%}
{%- set step_days = step_days | int -%}

{#- Counted measures of the day rows: feature prefix -> column of int_user_daily_activity_as_of.
    Each gives <prefix>_7d, _30d, _90d and _all_time. -#}
{%- set measures = [
    ('events', 'event_count'),
    ('sessions', 'session_count'),
    ('views', 'view_item_count'),
    ('add_to_carts', 'add_to_cart_count'),
    ('purchases', 'purchase_count'),
    ('orders', 'order_count'),
    ('cancelled_purchases', 'cancel_purchase_count'),
    ('subscriptions_started', 'start_subscription_count'),
    ('subscriptions_cancelled', 'cancel_subscription_count'),
] -%}
{%- set windows = [7, 30, 90] %}

with cutoffs as (

    -- k = 0: the scoring cutoff (as_of); k >= 1: midnight of as_of's day minus k x step days.
    -- last_day: the last calendar day whose activity the cutoff sees.
    select
        k = 0 as is_scoring_cutoff,
        case
            when k = 0 then {{ as_of() }}
            else cast(cast({{ as_of() }} as date) - k * {{ step_days }} as timestamp)
        end as cutoff_at,
        case
            when k = 0 then cast({{ as_of() }} as date)
            else cast({{ as_of() }} as date) - (k * {{ step_days }} + 1)
        end as last_day

    from (
        select cast(cutoff_number as integer) as k
        from generate_series(0, {{ cutoff_count }}) as cutoff_numbers(cutoff_number)
    ) as cutoff_numbers

),

purchase_days as (

    -- The exact times of the first and last purchase of each user and day (the day rows keep only
    -- the day's first / last event of any type). Cut at as_of like every event read.
    select
        user_id,
        cast(event_at as date) as activity_date,
        min(event_at) as first_purchase_at,
        max(event_at) as last_purchase_at

    from {{ ref('int_events_as_of') }}
    where event_type = 'purchase'
    group by user_id, cast(event_at as date)

),

activity_days as (

    -- Counts as integer: a day's count fits, and 64-bit sums cost less than the 128-bit sums DuckDB
    -- makes of bigints. Net revenue stays an exact decimal.
    select
        days.user_id,
        days.activity_date,
        {%- for prefix, column in measures %}
        cast(days.{{ column }} as integer) as {{ column }},
        {%- endfor %}
        days.purchase_revenue + days.cancelled_revenue as revenue,
        days.first_event_at,
        days.last_event_at,
        purchase_days.first_purchase_at,
        purchase_days.last_purchase_at

    from {{ ref('int_user_daily_activity_as_of') }} as days
    left join purchase_days
        on days.user_id = purchase_days.user_id
        and days.activity_date = purchase_days.activity_date

),

cutoff_days as (

    -- Each day row once per cutoff that sees it (the range join: the days up to the cutoff's last
    -- day). days_before: 0 on the last day, so a window of N days is `days_before < N`.
    select
        cutoffs.cutoff_at,
        cutoffs.is_scoring_cutoff,
        cutoffs.last_day - activity_days.activity_date as days_before,
        activity_days.*

    from activity_days
    inner join cutoffs
        on activity_days.activity_date <= cutoffs.last_day

),

aggregated as (

    -- One pass over cutoff_days. Windows are written `sum(case when days_before < N then x else 0
    -- end)` rather than `sum(x) filter (where days_before < N)`: the same rows, but on 8.7M joined
    -- rows x 50 aggregates DuckDB spent ~40 % more CPU on the filters (docs/dbt.md).
    select
        user_id,
        cutoff_at,
        is_scoring_cutoff,
        min(first_event_at) as first_event_at,
        max(last_event_at) as last_event_at,
        min(first_purchase_at) as first_purchase_at,
        max(last_purchase_at) as last_purchase_at,
        {%- for window in windows %}
        sum(case when days_before < {{ window }} then 1 else 0 end) as active_days_{{ window }}d,
        {%- endfor %}
        count(*) as active_days_all_time,
        {%- for prefix, column in measures %}
        {%- for window in windows %}
        sum(case when days_before < {{ window }} then {{ column }} else 0 end) as {{ prefix }}_{{ window }}d,
        {%- endfor %}
        sum({{ column }}) as {{ prefix }}_all_time,
        {%- endfor %}
        sum(case when days_before >= 7 and days_before < 14 then event_count else 0 end) as events_previous_7d,
        {%- for window in windows %}
        sum(case when days_before < {{ window }} then revenue else 0 end) as revenue_{{ window }}d,
        {%- endfor %}
        sum(revenue) as revenue_all_time,
        -- Distinct days with an order: the first, the last and how many.
        min(case when order_count > 0 then activity_date end) as first_order_day,
        max(case when order_count > 0 then activity_date end) as last_order_day,
        sum(case when order_count > 0 then 1 else 0 end) as order_days

    from cutoff_days
    group by user_id, cutoff_at, is_scoring_cutoff

)

select
    cast(user_id as varchar) as user_id,
    cast(cutoff_at as timestamp) as cutoff_at,
    cast(is_scoring_cutoff as boolean) as is_scoring_cutoff,
    cast({{ as_of() }} as timestamp) as as_of,

    -- Recency and tenure, in fractional days.
    {{ cohortflow_seconds_between('first_event_at', 'cutoff_at') }} / 86400 as tenure_days,
    {{ cohortflow_seconds_between('last_event_at', 'cutoff_at') }} / 86400 as days_since_last_event,
    {{ cohortflow_seconds_between('first_purchase_at', 'cutoff_at') }} / 86400 as days_since_first_purchase,
    {{ cohortflow_seconds_between('last_purchase_at', 'cutoff_at') }} / 86400 as days_since_last_purchase,

    {%- for window in windows %}
    cast(active_days_{{ window }}d as bigint) as active_days_{{ window }}d,
    {%- endfor %}
    cast(active_days_all_time as bigint) as active_days_all_time,
    {%- for prefix, column in measures %}
    {%- for window in windows %}
    cast({{ prefix }}_{{ window }}d as bigint) as {{ prefix }}_{{ window }}d,
    {%- endfor %}
    cast({{ prefix }}_all_time as bigint) as {{ prefix }}_all_time,
    {%- endfor %}

    -- Trend: +1 = every event of the last 14 days fell in the last 7, -1 = none did, 0 = steady or none.
    cast(events_previous_7d as bigint) as events_previous_7d,
    case
        when events_7d + events_previous_7d = 0 then cast(0 as double precision)
        else cast(events_7d - events_previous_7d as double precision) / (events_7d + events_previous_7d)
    end as events_trend_7d,
    {{ cohortflow_safe_divide('events_30d', 'active_days_30d') }} as events_per_active_day_30d,

    {%- for window in windows %}
    cast(revenue_{{ window }}d as double precision) as revenue_{{ window }}d,
    {%- endfor %}
    cast(revenue_all_time as double precision) as revenue_all_time,
    {{ cohortflow_safe_divide('revenue_all_time', 'orders_all_time') }} as average_order_value,
    case
        when order_days >= 2
            then cast(last_order_day - first_order_day as double precision) / (order_days - 1)
    end as mean_days_between_orders,

    {{ cohortflow_safe_divide('add_to_carts_30d', 'views_30d') }} as view_to_add_to_cart_ratio_30d,
    {{ cohortflow_safe_divide('purchases_30d', 'add_to_carts_30d') }} as add_to_cart_to_purchase_ratio_30d,
    case when subscriptions_started_all_time > subscriptions_cancelled_all_time then 1 else 0 end as has_active_subscription

from aggregated
