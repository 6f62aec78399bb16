-- computed_property() on a money column of user_properties: an exact decimal compared exactly.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    computed_property('revenue_90d', '>', 0.3),
], **inputs) }}
