-- Window within_first(3, days): [first_seen_at, first_seen_at + 3 d).
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('purchase', within=within_first(3, 'days')),
], **inputs) }}
