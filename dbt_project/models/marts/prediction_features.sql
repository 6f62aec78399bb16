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
-- (first / last event of the day rows). The only read of events is the exact times of purchases and
-- adds to cart (days_since_first/last_purchase, days_since_last_add_to_cart), which the day rows do
-- not keep: one scan of those lines.
--
-- Two kinds of feature are not sums of the day rows; each gets its own range join of the cutoffs,
-- with the same last_day and `days_before < N` rule, to rows of the per-day state
-- (macros/daily_state.sql; read like the day rows: stored days before as_of's day, as_of's day
-- from its events up to as_of):
--   time of day (preferred hour, its share, evening share; last 90 days): the events per user, day
--     and UTC hour (builtin_states().event_hours, what user_properties.preferred_hour_of_day reads);
--   distinct categories / items viewed (30 days): the computed properties of the same name, declared
--     below, read from their per-day values and counted without a distinct (see viewed_reach).
-- The weekend share is a sum of the day rows (their weekday).
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
{%- set windows = [7, 30, 90] -%}

{#- The last day the oldest cutoff sees: older state rows are outside every 30 / 90-day window. -#}
{%- set oldest_last_day = 'cast(' ~ as_of() ~ ' as date) - ' ~ ((cutoff_count * step_days + 1) if cutoff_count > 0 else 0) -%}

{#- The distinct counts are these computed properties (user_properties.distinct_items_viewed_30d is
    the second at as_of) at every cutoff. Declared in config.meta as computed_properties() does, so
    that int_user_daily_state_values keeps their per-day values whatever else the project declares. -#}
{%- set viewed_properties = [
    unique_count('distinct_categories_viewed_30d', 'category', event='view_item', within=last(30, 'days')),
    unique_count('distinct_items_viewed_30d', 'item_id', event='view_item', within=last(30, 'days')),
] -%}
{%- do config(meta={'computed_properties': viewed_properties}) %}

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

cart_and_purchase_days as (

    -- The exact times of the first and last purchase and of the last add to cart of each user and
    -- day (the day rows keep only the day's first / last event of any type). Cut at as_of like
    -- every event read.
    select
        user_id,
        cast(event_at as date) as activity_date,
        min(case when event_type = 'purchase' then event_at end) as first_purchase_at,
        max(case when event_type = 'purchase' then event_at end) as last_purchase_at,
        max(case when event_type = 'add_to_cart' then event_at end) as last_add_to_cart_at

    from {{ ref('int_events_as_of') }}
    where event_type in ('purchase', 'add_to_cart')
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
        case
            when {{ cohortflow_iso_day_of_week('days.activity_date') }} >= 6 then cast(days.event_count as integer)
            else 0
        end as weekend_event_count,
        days.first_event_at,
        days.last_event_at,
        cart_and_purchase_days.first_purchase_at,
        cart_and_purchase_days.last_purchase_at,
        cart_and_purchase_days.last_add_to_cart_at

    from {{ ref('int_user_daily_activity_as_of') }} as days
    left join cart_and_purchase_days
        on days.user_id = cart_and_purchase_days.user_id
        and days.activity_date = cart_and_purchase_days.activity_date

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
        max(last_add_to_cart_at) as last_add_to_cart_at,
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
        sum(case when order_count > 0 then 1 else 0 end) as order_days,
        -- Saturday and Sunday (UTC).
        sum(case when days_before < 90 then weekend_event_count else 0 end) as weekend_events_90d

    from cutoff_days
    group by user_id, cutoff_at, is_scoring_cutoff

),

hour_counts as (

    -- Events per user, cutoff and UTC hour of day in the cutoff's last 90 days: the state rows (per
    -- user, day and hour '00' .. '23') joined to the cutoffs whose 90 days hold their day.
    select
        hour_days.user_id,
        cutoffs.cutoff_at,
        hour_days.hour_of_day,
        sum(hour_days.event_count) as event_count

    from (
        select
            user_id,
            activity_date,
            cast(property_value as integer) as hour_of_day,
            cast(value_count as integer) as event_count
        from ({{ daily_state_window_values(builtin_states().event_hours, ever()) }}) as state_days
        where activity_date > {{ oldest_last_day }} - 90
    ) as hour_days
    inner join cutoffs
        on hour_days.activity_date <= cutoffs.last_day
        and hour_days.activity_date > cutoffs.last_day - 90
    group by hour_days.user_id, cutoffs.cutoff_at, hour_days.hour_of_day

),

time_of_day as (

    select
        user_id,
        cutoff_at,
        -- The busiest hour; on a tie the earliest (as user_properties.preferred_hour_of_day): the
        -- smallest hour_of_day - 24 x events (hours are below 24; an integer key costs less than a pair).
        {{ cohortflow_arg_min('hour_of_day', 'hour_of_day - 24 * event_count') }} as preferred_hour,
        max(event_count) as preferred_hour_events,
        sum(case when hour_of_day >= 18 then event_count else 0 end) as evening_events,
        sum(event_count) as hour_events

    from hour_counts
    group by user_id, cutoff_at

),

viewed_reach as (

    -- The 30-day distinct counts without a distinct. A value (a category, an item) is in the 30 days
    -- of a cutoff whose last day is L when its last view up to L is one of them. A view day is that
    -- last view for every L from that day to the day before the value's next view, so it counts for
    -- the cutoffs with 0 <= L - day < reach, reach = days to the next view, at most 30. The next view
    -- may come after a cutoff: only "after L" is used, which no later event changes.
    {%- for p in viewed_properties %}
    {%- if not loop.first %}

    union all
    {% endif %}
    select
        '{{ p.name }}' as feature,
        user_id,
        activity_date,
        cast(coalesce(least(lead(activity_date) over (
            partition by user_id, property_value order by activity_date) - activity_date, 30), 30) as integer) as reach
    from ({{ daily_state_window_values(computed_property_state(p), ever()) }}) as value_days
    where activity_date > {{ oldest_last_day }} - 30
    {%- endfor %}

),

viewed_counts as (

    select
        viewed_reach.user_id,
        cutoffs.cutoff_at,
        {%- for p in viewed_properties %}
        sum(case when viewed_reach.feature = '{{ p.name }}' then 1 else 0 end) as {{ p.name }}{{ ',' if not loop.last }}
        {%- endfor %}

    from viewed_reach
    inner join cutoffs
        on viewed_reach.activity_date <= cutoffs.last_day
        and cutoffs.last_day < viewed_reach.activity_date + viewed_reach.reach
    group by viewed_reach.user_id, cutoffs.cutoff_at

),

features as (

    select
        aggregated.*,
        time_of_day.preferred_hour,
        time_of_day.preferred_hour_events,
        time_of_day.evening_events,
        time_of_day.hour_events,
        {%- for p in viewed_properties %}
        coalesce(viewed_counts.{{ p.name }}, 0) as {{ p.name }}{{ ',' if not loop.last }}
        {%- endfor %}

    from aggregated
    left join time_of_day
        on aggregated.user_id = time_of_day.user_id
        and aggregated.cutoff_at = time_of_day.cutoff_at
    left join viewed_counts
        on aggregated.user_id = viewed_counts.user_id
        and aggregated.cutoff_at = viewed_counts.cutoff_at

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
    {{ cohortflow_seconds_between('last_add_to_cart_at', 'cutoff_at') }} / 86400 as days_since_last_add_to_cart,

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
    case when subscriptions_started_all_time > subscriptions_cancelled_all_time then 1 else 0 end as has_active_subscription,

    -- Time of day, last 90 days: NULL without an event in them.
    cast(preferred_hour as integer) as preferred_hour_utc_90d,
    {{ cohortflow_safe_divide('preferred_hour_events', 'hour_events') }} as preferred_hour_share_90d,
    {{ cohortflow_safe_divide('evening_events', 'hour_events') }} as evening_share_90d,
    {{ cohortflow_safe_divide('weekend_events_90d', 'events_90d') }} as weekend_share_90d,
    {%- for p in viewed_properties %}
    cast({{ p.name }} as bigint) as {{ p.name }}{{ ',' if not loop.last }}
    {%- endfor %}

from features
