-- Every event ever ingested, typed (stg_events), stored once: the incremental base that every
-- behavioural model reads through int_events_as_of. Not cut by as_of, so one stored copy serves
-- any as_of, past or present.
--
-- Increments key on ingested_at, not event_at: raw.events is append-only and a late event (an old
-- event_at) still arrives with a new ingested_at. A run copies the rows ingested after the newest
-- ingested_at already here; the JSON of older rows is never parsed again.
--
-- Safety net: a loader may stamp ingested_at with its own clock (`ingest_files(now=...)`), so a
-- row can arrive with an ingested_at at or below the watermark. Before choosing the cheap filter
-- the run checks that raw holds exactly as many rows at or below the watermark as this table; if
-- not, it falls back to an anti-join on event_id (correct, but it scans all of raw once).
--
-- dbt_loaded_at: the start of the dbt invocation that copied the row. Monotonic per run whatever
-- clock ingest used, so models built on this one (int_user_daily_activity) can find "rows new
-- since my last run" without trusting ingested_at. Bookkeeping only: a full refresh changes it.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
) }}

{%- set use_watermark = true -%}
{%- if is_incremental() and execute -%}
  {%- set state = run_query(
      "select max(ingested_at), count(*) from " ~ this).rows[0] -%}
  {%- set watermark = state[0] -%}
  {%- if watermark is not none -%}
    {%- set behind = run_query(
        "select count(*) from " ~ ref('stg_events') ~ " where ingested_at <= cast('"
        ~ watermark ~ "' as timestamp)").rows[0][0] -%}
    {%- set use_watermark = (behind == state[1]) -%}
    {%- if not use_watermark -%}
      {{ log("int_events: raw.events holds " ~ behind ~ " rows ingested at or before " ~ watermark
             ~ " but this table " ~ state[1] ~ "; matching every event_id this run", info=true) }}
    {%- endif -%}
  {%- else -%}
    {%- set use_watermark = false -%}
  {%- endif -%}
{%- endif %}

select
    event_id,
    user_id,
    device_id,
    event_type,
    event_at,
    session_id,
    item_id,
    category,
    price,
    quantity,
    revenue,
    order_id,
    event_properties,
    ingested_at,
    cast('{{ run_started_at.astimezone(modules.pytz.utc).strftime("%Y-%m-%d %H:%M:%S.%f") }}' as timestamp) as dbt_loaded_at

from {{ ref('stg_events') }} as events

{% if is_incremental() %}
  {% if use_watermark %}
where events.ingested_at > (select max(ingested_at) from {{ this }})
  {% else %}
where not exists (select 1 from {{ this }} as loaded where loaded.event_id = events.event_id)
  {% endif %}
{% endif %}
