-- Intent: fail when a cross-engine macro (macros/cross_db/) gives another answer than the one written here, on whichever engine runs it; the Postgres parity test runs it on both.
{%- set try_cast_cases = [
    ('double', "'12.5'", '12.5'), ('double', "' -1e3 '", '-1000'), ('double', "'.5'", '0.5'),
    ('double', "'abc'", 'null'), ('double', "''", 'null'), ('double', "null", 'null'),
    ('decimal', "'0.1'", '0.1'), ('decimal', "' 19.990 '", '19.99'), ('decimal', "'1e3'", '1000'),
    ('decimal', "'0.0000005'", '0.000001'), ('decimal', "'-0.0000025'", '-0.000003'),
    ('decimal', "'123456789012.123456'", '123456789012.123456'), ('decimal', "'999999999999.9999995'", 'null'),
    ('decimal', "'1e12'", 'null'), ('decimal', "'abc'", 'null'),
    ('bigint', "'42'", '42'), ('bigint', "'2.5'", '3'), ('bigint', "'-2.5'", '-3'), ('bigint', "'1e2'", '100'),
    ('bigint', "'x1'", 'null'), ('integer', "'99999999999'", 'null'),
    ('boolean', "'true'", 'true'), ('boolean', "'YES'", 'true'), ('boolean', "'0'", 'false'),
    ('boolean', "'n'", 'false'), ('boolean', "'maybe'", 'null'), ('boolean', "' t'", 'null'),
    ('timestamp_utc', "'2024-01-28T18:34:50Z'", "timestamp '2024-01-28 18:34:50'"),
    ('timestamp_utc', "'2024-01-28 18:34:50'", "timestamp '2024-01-28 18:34:50'"),
    ('timestamp_utc', "'2024-01-28'", "timestamp '2024-01-28 00:00:00'"),
    ('timestamp_utc', "'2024-01-28T18:34:50+02:00'", "timestamp '2024-01-28 16:34:50'"),
    ('timestamp_utc', "'2024-01-28T18:34:50-0530'", "timestamp '2024-01-29 00:04:50'"),
    ('timestamp_utc', "'2024-01-28T18:34:50.123456789Z'", "timestamp '2024-01-28 18:34:50.123456'"),
    ('timestamp_utc', "'2024-02-29T00:00:00Z'", "timestamp '2024-02-29 00:00:00'"),
    ('timestamp_utc', "'2023-02-29T00:00:00Z'", 'null'), ('timestamp_utc', "'2024-13-01'", 'null'),
    ('timestamp_utc', "'yesterday'", 'null'), ('timestamp_utc', "'2024-01-28T25:00:00Z'", 'null'),
] %}

{%- set types = {'double': 'double precision', 'decimal': cohortflow_money_type(), 'bigint': 'bigint', 'integer': 'integer', 'boolean': 'boolean', 'timestamp_utc': 'timestamp'} %}

-- Materialised, so that Postgres cannot fold the texts into the casts at plan time (constant folding
-- would evaluate a guarded cast of a constant even in a CASE branch that is never taken).
with texts as materialized (
{% for data_type, text, expected in try_cast_cases %}
    select {{ loop.index }} as case_number, cast({{ text }} as varchar) as text
    {{ 'union all' if not loop.last }}
{%- endfor %}
),

try_cast_cases as (
{% for data_type, text, expected in try_cast_cases %}
    select
        'try_cast {{ data_type }} {{ text | replace("'", "") }}' as case_name,
        cast({{ cohortflow_try_cast('text', data_type) }} as varchar) as actual,
        cast(cast({{ expected }} as {{ types[data_type] }}) as varchar) as expected
    from texts where case_number = {{ loop.index }}
    {{ 'union all' if not loop.last }}
{%- endfor %}
),

rows_for_aggregates as (

    select * from (values
        ('a', 1, 'x'), ('b', 3, null), ('c', 2, 'y'), (null, 4, 'z'), ('d', null, 'w')
    ) as t(label, position, extra)

),

aggregates as (

    select
        {{ cohortflow_arg_max('label', 'position') }} as last_label,
        {{ cohortflow_arg_min('label', 'position') }} as first_label,
        {{ cohortflow_arg_max('extra', 'position', "label <> 'c'") }} as last_extra_without_c,
        {{ cohortflow_arg_max('extra', 'position') }} as last_extra
    from rows_for_aggregates

),

scalar_cases as (

    select 'arg_max skips null values and orders' as case_name, last_label as actual, 'b' as expected from aggregates
    union all select 'arg_min', first_label, 'a' from aggregates
    union all select 'arg_max where (a null label is not <> c)', last_extra_without_c, 'x' from aggregates
    union all select 'arg_max null value skipped', last_extra, 'z' from aggregates
    union all select 'safe_divide 7/2', cast({{ cohortflow_safe_divide('7', '2') }} as varchar), cast(3.5 as varchar)
    union all select 'safe_divide by 0', cast({{ cohortflow_safe_divide('7', '0') }} as varchar), null
    union all select 'round half away', cast({{ cohortflow_round('cast(2.675 as double precision)', 2) }} as varchar), cast(cast(2.68 as double precision) as varchar)
    union all select 'round negative', cast({{ cohortflow_round('cast(-0.125 as double precision)', 2) }} as varchar), cast(cast(-0.13 as double precision) as varchar)
    union all select 'exact divide 1/3', cast({{ cohortflow_exact_divide("cast('1' as decimal(38, 6))", '3') }} as varchar), cast(cast('0.333333' as {{ cohortflow_money_sum_type() }}) as varchar)
    union all select 'exact divide 2/3', cast({{ cohortflow_exact_divide("cast('2' as decimal(38, 6))", '3') }} as varchar), cast(cast('0.666667' as {{ cohortflow_money_sum_type() }}) as varchar)
    union all select 'exact divide half away', cast({{ cohortflow_exact_divide("cast('0.000005' as decimal(38, 6))", '2') }} as varchar), cast(cast('0.000003' as {{ cohortflow_money_sum_type() }}) as varchar)
    union all select 'exact divide half away negative', cast({{ cohortflow_exact_divide("cast('-0.000005' as decimal(38, 6))", '2') }} as varchar), cast(cast('-0.000003' as {{ cohortflow_money_sum_type() }}) as varchar)
    union all select 'exact divide to the cent', cast({{ cohortflow_exact_divide("cast('20.01' as decimal(38, 6))", '2', 2) }} as varchar), cast(cast('10.01' as {{ cohortflow_money_sum_type() }}) as varchar)
    union all select 'exact divide large', cast({{ cohortflow_exact_divide("cast('123456789012345678901234.123456' as decimal(38, 6))", '1') }} as varchar), cast(cast('123456789012345678901234.123456' as {{ cohortflow_money_sum_type() }}) as varchar)
    union all select 'exact divide by 0', cast({{ cohortflow_exact_divide("cast('1' as decimal(38, 6))", '0') }} as varchar), null
    union all select 'to money rounds half away', cast({{ cohortflow_to_money("cast('0.1234565' as decimal(38, 7))") }} as varchar), cast(cast('0.123457' as {{ cohortflow_money_type() }}) as varchar)
    union all select 'to money out of range', cast({{ cohortflow_to_money("cast('1000000000000' as decimal(38, 6))") }} as varchar), null
    union all select 'hour', cast({{ cohortflow_hour("timestamp '2024-03-10 23:59:59'") }} as varchar), '23'
    union all select 'iso day of week (Sunday)', cast({{ cohortflow_iso_day_of_week("timestamp '2024-03-10 12:00:00'") }} as varchar), '7'
    union all select 'epoch seconds', cast({{ cohortflow_epoch_seconds("timestamp '1970-01-02 00:00:01.5'") }} as varchar), cast(cast(86401.5 as double precision) as varchar)
    union all select 'seconds between', cast({{ cohortflow_seconds_between("timestamp '2024-03-09 23:59:59.5'", "timestamp '2024-03-10 00:00:00'") }} as varchar), cast(cast(0.5 as double precision) as varchar)
    union all select 'date spine days', cast((select count(*) from {{ cohortflow_date_spine("timestamp '2024-02-27 10:00:00'", "timestamp '2024-03-01 00:00:00'") }} as spine) as varchar), '4'
    union all select 'date spine last day', cast((select max(day) from {{ cohortflow_date_spine("'2024-02-27'", "'2024-03-01'") }} as spine) as varchar), '2024-03-01'
    -- Local time of a UTC instant, daylight saving time included: London is UTC+0 in winter, UTC+1 from
    -- 2024-03-31 01:00 UTC; New York skips 02:00-03:00 local on 2024-03-10 (07:00 UTC is 03:00 EDT);
    -- Tokyo (UTC+9, no DST) is already on the next day; the zone may be any expression.
    union all select 'local London March', cast({{ cohortflow_utc_to_local("timestamp '2024-03-01 19:30:00'", "'Europe/London'") }} as varchar), cast(timestamp '2024-03-01 19:30:00' as varchar)
    union all select 'local London July', cast({{ cohortflow_utc_to_local("timestamp '2024-07-01 19:30:00'", "'Europe/London'") }} as varchar), cast(timestamp '2024-07-01 20:30:00' as varchar)
    union all select 'local London at the change', cast({{ cohortflow_utc_to_local("timestamp '2024-03-31 01:00:00'", "'Europe/London'") }} as varchar), cast(timestamp '2024-03-31 02:00:00' as varchar)
    union all select 'local London before the change', cast({{ cohortflow_utc_to_local("timestamp '2024-03-31 00:59:59.5'", "'Europe/London'") }} as varchar), cast(timestamp '2024-03-31 00:59:59.5' as varchar)
    union all select 'local New York after the gap', cast({{ cohortflow_utc_to_local("timestamp '2024-03-10 07:00:00'", "'America/New_York'") }} as varchar), cast(timestamp '2024-03-10 03:00:00' as varchar)
    union all select 'local Tokyo next day', cast({{ cohortflow_iso_day_of_week(cohortflow_utc_to_local("timestamp '2024-03-10 20:00:00'", "lower('Asia/Tokyo')")) }} as varchar), '1'
    union all select 'local hour Tokyo', cast({{ cohortflow_hour(cohortflow_utc_to_local("timestamp '2024-03-10 20:00:00'", "'Asia/Tokyo'")) }} as varchar), '5'
    union all select 'zone names know London and UTC', cast((select count(*) from {{ cohortflow_time_zone_names() }} as zones where name in ('Europe/London', 'UTC')) as varchar), '2'
    union all select 'zone names do not know Mars', cast((select count(*) from {{ cohortflow_time_zone_names() }} as zones where lower(name) = 'mars/olympus_mons') as varchar), '0'

)

select case_name, actual, expected
from (
    select * from try_cast_cases
    union all
    select * from scalar_cases
) as cases
where actual is distinct from expected
