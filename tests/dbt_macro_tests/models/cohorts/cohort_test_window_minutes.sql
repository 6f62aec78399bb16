-- Window last(30, minutes): (as_of - 30 min, as_of].
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('view_item', within=last(30, 'minutes')),
], **inputs) }}
