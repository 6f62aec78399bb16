-- New customers won since the campaign started: their first purchase ever happened at or after
-- campaign_started_at. Set the var per campaign (`--vars '{campaign_started_at: 2024-03-01}'`); by
-- default the campaign is taken to have started 14 days before as_of, so the example means something on
-- any data.
-- entered_at: their first purchase.
{%- set campaign_started_at = var('campaign_started_at', none) or cohort_as_of_minus(14, 'days') %}
{{ cohort(all_of=[
    performed('purchase', measure=nth_time(1), within=since(campaign_started_at)),
]) }}
