-- Window last(1, days): (as_of - 24 h, as_of].
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('view_item', within=last(1, 'days')),
], **inputs) }}
