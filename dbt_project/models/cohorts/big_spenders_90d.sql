-- Big spenders: purchase revenue of 500 or more in the last 90 days (about the top fifth of buyers on
-- the sample data). Cancellations are separate events and do not lower this sum.
-- entered_at: the purchase that took their 90-day total to 500.
{{ cohort(all_of=[
    performed('purchase', measure=total('revenue'), operator='>=', value=500, within=last(90, 'days')),
]) }}
