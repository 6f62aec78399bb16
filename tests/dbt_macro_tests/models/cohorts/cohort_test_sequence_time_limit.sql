-- sequence of three steps completed within one hour.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    sequence([step('view_item'), step('add_to_cart'), step('purchase')], completed_within=duration(1, 'hours')),
], **inputs) }}
