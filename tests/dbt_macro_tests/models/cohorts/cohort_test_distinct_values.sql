-- distinct(): more than 2 different items viewed in 30 days.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('view_item', measure=distinct('item_id'), operator='>', value=2, within=last(30, 'days')),
], **inputs) }}
