"""Sync state kept in the warehouse, schema ``cohortflow_syncs`` (dbt never touches it).

* ``sync_state`` — per sync and record key, what was last *acknowledged* by the destination: the
  hash and the JSON of the values sent. The next run diffs the source against this, never against
  the destination.
* ``sync_runs`` — one row per run (dry runs included) with its counts and error.
* ``sync_records`` — one row per record a run sent (or had rejected), so "what happened to user X"
  is one query.

All times are UTC ``timestamp`` without zone, like the rest of the warehouse.
"""

from __future__ import annotations

import duckdb

STATE_SCHEMA = "cohortflow_syncs"

STATE_DDL = f"""
create schema if not exists {STATE_SCHEMA};

create table if not exists {STATE_SCHEMA}.sync_state (
    sync_name     varchar   not null,
    record_key    varchar   not null,   -- the primary key value; a JSON array of strings when composite
    record_hash   varchar   not null,   -- md5 of the JSON below
    record        json      not null,   -- the values last acknowledged by the destination
    sent_at       timestamp not null,   -- UTC
    run_id        varchar   not null
);

create table if not exists {STATE_SCHEMA}.sync_runs (
    run_id          varchar   not null,
    sync_name       varchar   not null,
    started_at      timestamp not null,
    finished_at     timestamp,
    status          varchar   not null, -- running / succeeded / failed / dry_run / abandoned
    mode            varchar   not null,
    dry_run         boolean   not null,
    full_resync     boolean   not null,
    rows_processed  bigint    not null default 0,
    rows_added      bigint    not null default 0,
    rows_changed    bigint    not null default 0,
    rows_removed    bigint    not null default 0,
    rows_rejected   bigint    not null default 0,
    rows_skipped    bigint    not null default 0,
    error           varchar,
    destination     varchar             -- where the records went (never a secret)
);

create table if not exists {STATE_SCHEMA}.sync_records (
    run_id      varchar not null,
    sync_name   varchar not null,
    record_key  varchar not null,
    operation   varchar not null,       -- add / change / remove
    status      varchar not null,       -- sent / rejected
    reason      varchar                 -- why it was rejected, as the destination said
);
"""


def ensure_state_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``cohortflow_syncs`` schema and its tables if missing (idempotent)."""
    con.execute(STATE_DDL)
