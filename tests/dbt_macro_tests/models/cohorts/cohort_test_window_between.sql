-- Window between(2024-03-01, 2024-03-08): [start, end).
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('view_item', within=between('2024-03-01', '2024-03-08T00:00:00+00:00')),
], **inputs) }}
