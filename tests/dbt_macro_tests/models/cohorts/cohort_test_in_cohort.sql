-- in_cohort(): members of cohort_test_count_ge who purchased; entered at the later of the two.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    in_cohort('cohort_test_count_ge'),
    performed('purchase'),
], **inputs) }}
