-- Predictive: big spenders in the top quarter of churn risk (prediction churn_30d) — the users a
-- win-back campaign should reach before they go quiet.
{{ cohort(all_of=[
    had_propensity('churn_30d', measure='percentile', operator='>=', value=75),
    in_cohort('big_spenders_90d'),
]) }}
