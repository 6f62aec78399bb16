-- Intent: cohortflow_edit_distance (behind "did you mean ...?" for names not in the tracking plan) is the
-- optimal string alignment distance: insertions, deletions, substitutions and swaps of two neighbouring
-- characters cost 1 (worked out by hand below); cohortflow_closest_name picks the nearest candidate
-- (case-insensitive, ties alphabetically first), a candidate the name starts, or none when nothing is
-- close. Rows returned are the cases where the macro disagrees.
{%- set distances = [
    ('', '', 0),
    ('', 'abc', 3),
    ('abc', '', 3),
    ('abc', 'abc', 0),
    ('a', 'b', 1),
    ('kitten', 'sitting', 3),
    ('purchse', 'purchase', 1),
    ('categroy', 'category', 1),
    ('ab', 'ba', 1),
    ('ca', 'abc', 3),
    ('flaw', 'lawn', 2),
    ('Purchase', 'purchase', 1),
    ('add_to_crt', 'add_to_cart', 1),
    ('view_item', 'purchase', 8),
] -%}
{%- set closest = [
    ('purchse', ['view_item', 'purchase', 'add_to_cart'], 'purchase'),
    ('PURCHASE', ['purchase', 'cancel_purchase'], 'purchase'),
    ('revnue', ['price', 'quantity', 'revenue'], 'revenue'),
    ('order', ['category', 'order_id'], 'order_id'),
    ('cat', ['bat', 'car'], 'bat'),
    ('xyz', ['purchase', 'view_item'], none),
    ('x', [], none),
] %}
select *
from (
    {%- for a, b, expected in distances %}
    select
        cast('distance' as varchar) as macro,
        cast('{{ a }} / {{ b }}' as varchar) as arguments,
        cast('{{ cohortflow_edit_distance(a, b) }}' as varchar) as actual,
        cast('{{ expected }}' as varchar) as expected
    union all
    {%- endfor %}
    {%- for name, candidates, expected in closest %}
    select
        cast('closest' as varchar) as macro,
        cast('{{ name }} / {{ candidates | join(" ") }}' as varchar) as arguments,
        cast('{{ cohortflow_closest_name(name, candidates) }}' as varchar) as actual,
        cast('{{ expected }}' as varchar) as expected
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
) as cases
where actual <> expected
