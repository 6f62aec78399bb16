-- total() and where() on a JSON property read its text as an exact decimal (never a double).
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('purchase', where=[where('discount', '>=', 0.1)], measure=total('discount'), operator='=', value=0.3),
], **inputs) }}
