-- The onboarding audience: first seen in the last 7 days and no purchase ever (up to as_of).
-- entered_at: first_seen_at, when they became a new user.
{{ cohort(all_of=[
    had_been_new(within=last(7, 'days')),
    did_not_perform('purchase'),
]) }}
