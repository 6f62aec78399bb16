-- A cohort of exclusions only: every known user without a purchase, entered at first_seen_at.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    did_not_perform('purchase'),
], **inputs) }}
