-- negate(any_of(...)): active, and neither purchased nor added to cart.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    had_been_active(),
    negate(any_of([performed('purchase'), performed('add_to_cart')])),
], **inputs) }}
