-- Count operator =: viewed items = 2 times in the last 7 days.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('view_item', operator='=', value=2, within=last(7, 'days')),
], **inputs) }}
