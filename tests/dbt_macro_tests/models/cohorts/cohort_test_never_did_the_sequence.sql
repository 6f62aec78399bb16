-- negate(sequence([...])): never did the whole sequence (compare cohort_test_did_a_not_b_after).
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    negate(sequence([step('add_to_cart'), step('purchase')])),
], **inputs) }}
