"""Where the warehouse lives and the raw tables every stage agrees on.

The warehouse is one DuckDB file. ``COHORTFLOW_WAREHOUSE`` points the CLI, the
dbt profile and the Dagster resources at another file; nothing here reads it at
import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DEFAULT_WAREHOUSE = PROJECT_ROOT / "warehouse" / "cohortflow.duckdb"
WAREHOUSE_ENV_VAR = "COHORTFLOW_WAREHOUSE"

RAW_SCHEMA = "raw"

# Raw tables are append-only landing tables, written only by ``cohortflow ingest``.
# Times are stored as TIMESTAMP in UTC (no zone); JSON as DuckDB JSON text.
RAW_DDL = f"""
create schema if not exists {RAW_SCHEMA};

create table if not exists {RAW_SCHEMA}.events (
    event_id          varchar   not null,             -- unique: insert_id, or derived from file + row when absent (dedupe by anti-join, no index)
    insert_id         varchar,                        -- as sent by the source (Amplitude insert_id / $insert_id)
    user_id           varchar,
    device_id         varchar,
    event_type        varchar   not null,
    event_time        timestamp not null,             -- UTC
    session_id        bigint,
    event_properties  json      not null,             -- always an object ('{{}}' when none)
    user_properties   json      not null,             -- always an object ('{{}}' when none)
    source_format     varchar   not null,
    source_file       varchar   not null,
    source_row        bigint    not null,             -- 1-based line / record number in the source file
    ingested_at       timestamp not null
);

create table if not exists {RAW_SCHEMA}.users (
    user_id           varchar   not null,
    user_properties   json      not null,             -- email, phone, country, has_marketing_consent, ...
    updated_at        timestamp not null,             -- when these values became true (UTC)
    source_format     varchar   not null,
    source_file       varchar   not null,
    source_row        bigint    not null,
    ingested_at       timestamp not null
);

create table if not exists {RAW_SCHEMA}.items (
    item_id           varchar   not null,
    item_name         varchar,
    category          varchar,
    price             double,
    is_in_stock       boolean,
    item_properties   json      not null,
    updated_at        timestamp not null,
    source_format     varchar   not null,
    source_file       varchar   not null,
    source_row        bigint    not null,
    ingested_at       timestamp not null
);

create table if not exists {RAW_SCHEMA}.rejected_events (
    source_format     varchar   not null,
    source_file       varchar   not null,
    source_row        bigint    not null,
    entity            varchar   not null,             -- events / users / items
    reason            varchar   not null,             -- machine-readable code, see cohortflow.ingest.reasons
    detail            varchar   not null,             -- human-readable: names the field and the bad value
    payload           varchar   not null,             -- the original line / record, untouched
    ingested_at       timestamp not null
);

create table if not exists {RAW_SCHEMA}.untracked_events (
    source_format     varchar   not null,
    source_file       varchar   not null,
    event_type        varchar   not null,
    property          varchar,                        -- NULL: the event type is not in the tracking plan
    events            bigint    not null,             -- loaded events of this file with that type / property
    first_event_time  timestamp not null,
    last_event_time   timestamp not null,
    ingested_at       timestamp not null              -- one row per file x event type x property
);

create table if not exists {RAW_SCHEMA}.ingested_files (
    file_sha256       varchar   not null,
    source_format     varchar   not null,
    entity            varchar   not null,
    source_file       varchar   not null,
    rows_read         bigint    not null,
    rows_loaded       bigint    not null,
    rows_duplicate    bigint    not null,
    rows_rejected     bigint    not null,
    ingested_at       timestamp not null,
    primary key (file_sha256, source_format, entity)
);

-- Uploaded cohorts: the Cohort API lands each upload / membership change as a file
-- (<warehouse folder>/landing/cohorts), cohortflow.ingest.uploaded_cohorts copies it here at the start
-- of the next run. One row per change, in the order the API accepted them; dbt folds them.
create table if not exists {RAW_SCHEMA}.uploaded_cohort_changes (
    change_id         varchar   not null,             -- <request_id>:<position in the request>, unique
    request_id        varchar   not null,             -- one accepted API request = one landed file
    cohort_id         varchar   not null,
    operation         varchar   not null,             -- create / replace (a whole new list) / add / remove
    cohort_name       varchar,                        -- create / replace only
    description       varchar,
    owner             varchar,
    id_type           varchar   not null,             -- BY_USER_ID
    id_count          bigint    not null,             -- distinct valid ids in this change
    received_at       timestamp not null,             -- when the API accepted it (UTC)
    change_sequence   bigint    not null,             -- received_at in ns: the order of changes, then change_id
    requested_by      varchar   not null,             -- the API key's name
    source_file       varchar   not null,
    ingested_at       timestamp not null
);

create table if not exists {RAW_SCHEMA}.uploaded_cohort_change_ids (
    change_id         varchar   not null,
    user_id           varchar   not null              -- one row per distinct id of the change
);
"""


def warehouse_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the warehouse file: an explicit path, else ``$COHORTFLOW_WAREHOUSE``, else the default.

    Relative paths are resolved against the current directory, so that dbt (which runs
    from ``dbt_project/``) and the CLI agree on one absolute file.
    """
    chosen = path or os.environ.get(WAREHOUSE_ENV_VAR) or DEFAULT_WAREHOUSE
    return Path(chosen).expanduser().resolve()


def connect(path: str | os.PathLike[str] | None = None, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (creating its folder and the raw tables when writable)."""
    target = warehouse_path(path)
    if read_only:
        return duckdb.connect(str(target), read_only=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(target))
    con.execute("set timezone = 'UTC'")
    ensure_raw_tables(con)
    return con


def ensure_raw_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw landing tables if they are missing (idempotent)."""
    con.execute(RAW_DDL)
