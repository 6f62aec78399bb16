-- Intent: fail when any cohort_test_* model, built on the cohort seeds, differs from the hand-worked
-- seeds/cohorts/cohort_expected.csv (a row missing on either side, or another entered_at).

with actual as (
    select 'cohort_test_any_of_with_negated_member' as model_name, user_id, entered_at from {{ ref('cohort_test_any_of_with_negated_member') }}
    union all
    select 'cohort_test_computed_property' as model_name, user_id, entered_at from {{ ref('cohort_test_computed_property') }}
    union all
    select 'cohort_test_computed_property_money' as model_name, user_id, entered_at from {{ ref('cohort_test_computed_property_money') }}
    union all
    select 'cohort_test_count_eq' as model_name, user_id, entered_at from {{ ref('cohort_test_count_eq') }}
    union all
    select 'cohort_test_count_ge' as model_name, user_id, entered_at from {{ ref('cohort_test_count_ge') }}
    union all
    select 'cohort_test_count_gt' as model_name, user_id, entered_at from {{ ref('cohort_test_count_gt') }}
    union all
    select 'cohort_test_count_le' as model_name, user_id, entered_at from {{ ref('cohort_test_count_le') }}
    union all
    select 'cohort_test_count_lt' as model_name, user_id, entered_at from {{ ref('cohort_test_count_lt') }}
    union all
    select 'cohort_test_count_ne' as model_name, user_id, entered_at from {{ ref('cohort_test_count_ne') }}
    union all
    select 'cohort_test_distinct_days' as model_name, user_id, entered_at from {{ ref('cohort_test_distinct_days') }}
    union all
    select 'cohort_test_distinct_values' as model_name, user_id, entered_at from {{ ref('cohort_test_distinct_values') }}
    union all
    select 'cohort_test_exclusions_only' as model_name, user_id, entered_at from {{ ref('cohort_test_exclusions_only') }}
    union all
    select 'cohort_test_in_cohort' as model_name, user_id, entered_at from {{ ref('cohort_test_in_cohort') }}
    union all
    select 'cohort_test_in_uploaded_cohort' as model_name, user_id, entered_at from {{ ref('cohort_test_in_uploaded_cohort') }}
    union all
    select 'cohort_test_negated_any_of' as model_name, user_id, entered_at from {{ ref('cohort_test_negated_any_of') }}
    union all
    select 'cohort_test_new_and_active' as model_name, user_id, entered_at from {{ ref('cohort_test_new_and_active') }}
    union all
    select 'cohort_test_not_in_cohort' as model_name, user_id, entered_at from {{ ref('cohort_test_not_in_cohort') }}
    union all
    select 'cohort_test_not_in_uploaded_cohort' as model_name, user_id, entered_at from {{ ref('cohort_test_not_in_uploaded_cohort') }}
    union all
    select 'cohort_test_nth_time' as model_name, user_id, entered_at from {{ ref('cohort_test_nth_time') }}
    union all
    select 'cohort_test_sequence_time_limit' as model_name, user_id, entered_at from {{ ref('cohort_test_sequence_time_limit') }}
    union all
    select 'cohort_test_total_exact' as model_name, user_id, entered_at from {{ ref('cohort_test_total_exact') }}
    union all
    select 'cohort_test_total_exact_json_property' as model_name, user_id, entered_at from {{ ref('cohort_test_total_exact_json_property') }}
    union all
    select 'cohort_test_total_json_property' as model_name, user_id, entered_at from {{ ref('cohort_test_total_json_property') }}
    union all
    select 'cohort_test_user_property_any_in_window' as model_name, user_id, entered_at from {{ ref('cohort_test_user_property_any_in_window') }}
    union all
    select 'cohort_test_user_property_is_null' as model_name, user_id, entered_at from {{ ref('cohort_test_user_property_is_null') }}
    union all
    select 'cohort_test_user_property_most_recent_number' as model_name, user_id, entered_at from {{ ref('cohort_test_user_property_most_recent_number') }}
    union all
    select 'cohort_test_where_not_equal' as model_name, user_id, entered_at from {{ ref('cohort_test_where_not_equal') }}
    union all
    select 'cohort_test_where_predicates' as model_name, user_id, entered_at from {{ ref('cohort_test_where_predicates') }}
    union all
    select 'cohort_test_window_between' as model_name, user_id, entered_at from {{ ref('cohort_test_window_between') }}
    union all
    select 'cohort_test_window_days' as model_name, user_id, entered_at from {{ ref('cohort_test_window_days') }}
    union all
    select 'cohort_test_window_hours' as model_name, user_id, entered_at from {{ ref('cohort_test_window_hours') }}
    union all
    select 'cohort_test_window_minutes' as model_name, user_id, entered_at from {{ ref('cohort_test_window_minutes') }}
    union all
    select 'cohort_test_window_since' as model_name, user_id, entered_at from {{ ref('cohort_test_window_since') }}
    union all
    select 'cohort_test_window_weeks' as model_name, user_id, entered_at from {{ ref('cohort_test_window_weeks') }}
    union all
    select 'cohort_test_window_within_first' as model_name, user_id, entered_at from {{ ref('cohort_test_window_within_first') }}
),

expected as (

    select model_name, user_id, entered_at from {{ ref('cohort_expected') }}

),

missing as (

    select 'missing' as problem, * from expected
    except
    select 'missing' as problem, * from actual

),

unexpected as (

    select 'unexpected' as problem, * from actual
    except
    select 'unexpected' as problem, * from expected

)

select * from missing
union all
select * from unexpected
