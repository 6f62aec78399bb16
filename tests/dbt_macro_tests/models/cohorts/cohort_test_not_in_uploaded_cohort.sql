-- not_in_uploaded_cohort(): active users who are not in the uploaded cohort vip_list_3fa1c2.
{%- set inputs = {'events': 'cohort_events', 'users': 'cohort_users', 'attributes': 'cohort_attribute_updates', 'properties': 'cohort_user_properties', 'uploaded': 'cohort_uploaded_members'} %}
{{ cohort(all_of=[
    had_been_active(),
    not_in_uploaded_cohort('vip_list_3fa1c2'),
], **inputs) }}
