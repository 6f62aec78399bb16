-- nth_time(2): the second purchase ever happened in the last 7 days.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('purchase', measure=nth_time(2), within=last(7, 'days')),
], **inputs) }}
