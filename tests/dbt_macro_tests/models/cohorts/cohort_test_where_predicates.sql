-- where(): all predicates must hold (in, >= on a typed column).
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('view_item', where=[where('category', 'in', ['shoes', 'toys']), where('price', '>=', 50)]),
], **inputs) }}
