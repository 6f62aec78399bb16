-- Window shoppers of electronics (the catalogue's most expensive category): viewed electronics items at
-- least 3 times in the last 7 days and bought no electronics in that time.
-- entered_at: their third electronics view in the window.
{{ cohort(all_of=[
    performed('view_item', where=[where('category', '=', 'electronics')], operator='>=', value=3, within=last(7, 'days')),
    did_not_perform('purchase', where=[where('category', '=', 'electronics')], within=last(7, 'days')),
]) }}
