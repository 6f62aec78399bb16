-- Predictive: the 10 % of active users most likely to buy within 7 days (prediction purchase_7d).
-- entered_at: the scoring run that put them there.
{{ cohort(all_of=[
    had_propensity('purchase_7d', measure='percentile', operator='>=', value=90),
]) }}
