-- Intent: property_value_text (the long form's and the value kinds' text) writes numbers without
-- trailing zeros (exact decimals digit for digit), timestamps, booleans and integers exactly as the seed says; rows returned differ.
select *
from (
    select
        case_name,
        {{ property_value_text('number_value', 'double precision') }} as number_text,
        expected_number_text,
        {{ property_value_text('stamp_value', 'timestamp') }} as stamp_text,
        expected_stamp_text,
        {{ property_value_text('flag_value', 'boolean') }} as flag_text,
        expected_flag_text,
        {{ property_value_text('count_value', 'bigint') }} as count_text,
        expected_count_text,
        {{ property_value_text('exact_value', 'decimal(38, 6)') }} as exact_text,
        expected_exact_text
    from {{ ref('property_value_text_cases') }}
) as written
where number_text is distinct from expected_number_text
   or stamp_text is distinct from expected_stamp_text
   or flag_text is distinct from expected_flag_text
   or count_text is distinct from expected_count_text
   or exact_text is distinct from expected_exact_text
