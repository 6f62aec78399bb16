-- One step and then_not: cancelled a subscription and did not start one again afterwards.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    sequence([step('cancel_subscription')], then_not='start_subscription'),
], **inputs) }}
