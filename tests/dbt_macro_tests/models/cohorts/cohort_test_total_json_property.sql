-- total() of a JSON event property, with a where() on another JSON property.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('purchase', where=[where('coupon', '=', 'SPRING')], measure=total('discount'), operator='>=', value=10),
], **inputs) }}
