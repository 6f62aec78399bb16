-- Window last(2, hours): (as_of - 2 h, as_of].
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('view_item', within=last(2, 'hours')),
], **inputs) }}
