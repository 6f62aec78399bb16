-- not_in_cohort(): active users who are not members of cohort_test_count_ge.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    had_been_active(),
    not_in_cohort('cohort_test_count_ge'),
], **inputs) }}
