-- Amplitude Activation's own example: added to cart in the last 24 hours, no purchase in that time.
-- entered_at: the first add_to_cart in the window.
{{ cohort(all_of=[
    performed('add_to_cart', within=last(24, 'hours')),
    did_not_perform('purchase', within=last(24, 'hours')),
]) }}
