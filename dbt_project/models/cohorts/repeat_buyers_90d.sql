-- Repeat buyers: purchase lines from at least 3 distinct orders in the last 90 days.
-- entered_at: when the third order of the window was placed.
{{ cohort(all_of=[
    performed('purchase', measure=distinct('order_id'), operator='>=', value=3, within=last(90, 'days')),
]) }}
