-- on_distinct_days(): sessions on at least 2 distinct UTC days in 7 days.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('session_start', measure=on_distinct_days(), operator='>=', value=2, within=last(7, 'days')),
], **inputs) }}
