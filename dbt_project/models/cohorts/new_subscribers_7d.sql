-- Amplitude Activation's "activated a subscription recently": started a subscription in the last 7 days.
-- entered_at: their first start_subscription in the window.
{{ cohort(all_of=[
    performed('start_subscription', within=last(7, 'days')),
]) }}
