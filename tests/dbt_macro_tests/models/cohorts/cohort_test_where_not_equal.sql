-- where() with != treats NULL as different (is distinct from).
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    performed('view_item', where=[where('category', '!=', 'books')]),
], **inputs) }}
