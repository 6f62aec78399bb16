-- Intent: fail when DuckDB's common-subexpression bug is active (profiles.yml must disable that optimizer), because it silently makes "+ 30 days" and "+ 1 month" windows equal.
{{ config(enabled=target.type == 'duckdb') }}

with probe as (

    select timestamp '2024-01-31 00:00:00' as anchored_at

),

shifted as (

    -- Both in one SELECT: that is where the bug merges them (2024-03-01 vs 2024-02-29).
    select
        anchored_at + interval 30 day as plus_30_days_at,
        anchored_at + interval 1 month as plus_1_month_at
    from probe

),

-- Aggregating keeps DuckDB from pushing the comparison into the scan, which would hide the bug.
merged as (

    select count(*) filter (where plus_30_days_at = plus_1_month_at) as merged_count
    from shifted

)

select merged_count
from merged
where merged_count > 0
