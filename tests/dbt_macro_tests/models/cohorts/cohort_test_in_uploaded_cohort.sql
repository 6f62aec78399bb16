-- in_uploaded_cohort(): members of the uploaded cohort vip_list_3fa1c2 active in the last 7 days;
-- entered at the later of being added and the first event in the window.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties', 'uploaded': 'cohort_uploaded_members'} %}
{{ cohort(all_of=[
    in_uploaded_cohort('vip_list_3fa1c2'),
    had_been_active(within=last(7, 'days')),
], **inputs) }}
