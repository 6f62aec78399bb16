-- computed_property(): a column of user_properties; entered at the last event (else first_seen_at).
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    computed_property('order_count', '>=', 1),
], **inputs) }}
