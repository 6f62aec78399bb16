-- user_property is_null: never set (up to as_of).
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    user_property('email', 'is_null'),
], **inputs) }}
