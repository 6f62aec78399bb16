-- Japanese users who can be messaged: most recent country JP and most recent marketing consent true,
-- both as known at as_of (attribute updates at or before it).
-- entered_at: when the later of the two values was set.
{{ cohort(all_of=[
    user_property('country', '=', 'JP'),
    user_property('has_marketing_consent', '=', true),
]) }}
