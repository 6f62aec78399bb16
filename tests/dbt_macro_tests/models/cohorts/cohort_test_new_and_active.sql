-- had_been_new + had_been_active: first seen since March and active this week.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    had_been_new(within=since('2024-03-01')),
    had_been_active(within=last(7, 'days')),
], **inputs) }}
