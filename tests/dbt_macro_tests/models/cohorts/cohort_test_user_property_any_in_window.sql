-- user_property any_in_window: plan was gold at some update in the last 30 days.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties'} %}
{{ cohort(all_of=[
    user_property('plan', '=', 'gold', using='any_in_window', within=last(30, 'days')),
], **inputs) }}
