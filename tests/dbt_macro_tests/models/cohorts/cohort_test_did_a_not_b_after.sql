-- sequence([A], then_not=B): did A and no B after it (compare cohort_test_never_did_the_sequence).
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    sequence([step('add_to_cart')], then_not='purchase'),
], **inputs) }}
