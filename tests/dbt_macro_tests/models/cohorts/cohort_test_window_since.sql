-- Window since(2024-03-01): [2024-03-01 00:00 UTC, as_of].
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('view_item', within=since('2024-03-01')),
], **inputs) }}
