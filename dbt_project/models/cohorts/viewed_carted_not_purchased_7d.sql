-- Funnel drop-off: viewed an item, then added to cart, then did not purchase, in that order, in the
-- last 7 days (a purchase before the view does not matter; one after the add does).
-- entered_at: the first add_to_cart that completed view -> cart after their last purchase in the window.
{{ cohort(all_of=[
    sequence([step('view_item'), step('add_to_cart')], within=last(7, 'days'), then_not='purchase'),
]) }}
