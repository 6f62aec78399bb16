-- user_property most_recent with a number: the latest value, cast to a number.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    user_property('age', '>=', 18),
], **inputs) }}
