-- total() is an exact sum compared with an exact threshold: 0.1 + 0.2 is 0.3, which is not > 0.3.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('purchase', measure=total('revenue'), operator='>', value=0.3, within=last(1, 'days')),
], **inputs) }}
