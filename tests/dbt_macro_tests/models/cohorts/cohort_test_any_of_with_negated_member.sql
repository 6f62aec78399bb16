-- any_of with a negated member: bought this week OR dormant for 30 days.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    any_of([
        performed('purchase', within=last(7, 'days')),
        negate(had_been_active(within=last(30, 'days'))),
    ]),
], **inputs) }}
