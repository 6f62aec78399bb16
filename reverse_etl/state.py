"""Sync state kept in the warehouse, schema ``cohortflow_syncs`` (dbt never touches it).

* ``sync_state`` — per sync and record key, what was last *acknowledged* by the destination: the
  hash and the JSON of the values sent. The next run diffs the source against this, never against
  the destination.
* ``sync_runs`` — one row per run (dry runs and paused attempts included) with its counts and error.
* ``sync_records`` — one row per record a run handed to the destination (sent, rejected or skipped
  by the destination, with the reason; the idempotency key; whether it was sent anew because an
  earlier unmarked operation may have arrived, and whether it was replayed), so "what happened to
  user X" is one query.
* ``sync_outbox`` — batches written down *before* they are sent, deleted in the transaction that
  marks them. Rows left behind by a killed or failed run are replayed, under the same idempotency
  key, by the next run (see ``docs/sync-engine.md``).
* ``sync_refused`` — records the destination refused for good (``rejected``) or did not send by its
  own rule (``skipped``), with the hash refused: they are not sent again until their data changes.
* ``sync_control`` — one row per paused (or once paused) sync.

All times are UTC ``timestamp`` without zone, like the rest of the warehouse. Warehouses created by
an older version get the new tables and columns on first use (``CREATE ... IF NOT EXISTS`` and
``ALTER TABLE ... ADD COLUMN``); existing rows keep their values, new count columns read 0.
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
    status          varchar   not null, -- running / succeeded / failed / dry_run / abandoned / paused
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
    status      varchar not null,       -- sent / rejected / skipped
    reason      varchar                 -- why it was rejected or skipped, as the destination said
);

create table if not exists {STATE_SCHEMA}.sync_outbox (
    sync_name    varchar   not null,
    run_id       varchar   not null,    -- the run that first wrote the batch
    batch_key    varchar   not null,    -- the idempotency key the batch is (re-)sent under
    batch_seq    integer   not null,    -- the batch's sequence in that run
    batch_order  bigint    not null,    -- increases with every batch of the sync: the latest row of a record wins
    operation    varchar   not null,    -- add / change / remove
    record_key   varchar   not null,
    record_hash  varchar   not null,    -- add / change: hash of the values sent; remove: hash last acknowledged
    record       json,                  -- add / change: the values sent (to remove them if they leave the audience)
    written_at   timestamp not null,
    delivery     varchar                -- new / in_doubt: why the record was put in this batch
);

create table if not exists {STATE_SCHEMA}.sync_refused (
    sync_name    varchar   not null,
    record_key   varchar   not null,
    operation    varchar   not null,    -- the operation refused
    record_hash  varchar   not null,    -- the data refused: a record with another hash is sent again
    status       varchar   not null,    -- rejected (permanently) / skipped (by the destination's own rule)
    reason       varchar   not null,
    run_id       varchar   not null,
    refused_at   timestamp not null
);

create table if not exists {STATE_SCHEMA}.sync_control (
    sync_name    varchar   not null,
    paused       boolean   not null,
    reason       varchar,
    paused_at    timestamp,
    resumed_at   timestamp
);
"""

# Columns added after the first release: (table, column, type). Added to existing warehouses.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("sync_runs", "rows_rejected_permanently", "bigint default 0"),
    ("sync_runs", "rows_skipped_by_destination", "bigint default 0"),
    ("sync_runs", "rows_held", "bigint default 0"),
    ("sync_runs", "rows_replayed", "bigint default 0"),
    ("sync_runs", "rows_excluded_consent", "bigint default 0"),
    ("sync_runs", "rows_excluded_suppressed", "bigint default 0"),
    ("sync_runs", "rows_unchanged", "bigint default 0"),
    ("sync_runs", "audience_size", "bigint default 0"),
    ("sync_runs", "note", "varchar"),
    ("sync_records", "record_hash", "varchar"),
    ("sync_records", "batch_key", "varchar"),
    ("sync_records", "recorded_at", "timestamp"),
    ("sync_records", "delivery", "varchar"),
    ("sync_records", "replayed", "boolean"),
    ("sync_outbox", "delivery", "varchar"),
)


def ensure_state_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``cohortflow_syncs`` schema and its tables if missing, and add missing columns.

    Idempotent and cheap when everything exists (one catalog query).
    """
    con.execute(STATE_DDL)
    existing = {
        (table, column)
        for table, column in con.execute(
            "select table_name, column_name from duckdb_columns() "
            "where schema_name = ? and database_name = current_database()",
            [STATE_SCHEMA],
        ).fetchall()
    }
    for table, column, column_type in ADDED_COLUMNS:
        if (table, column) not in existing:
            con.execute(f"alter table {STATE_SCHEMA}.{table} add column if not exists {column} {column_type}")


def state_tables_exist(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``cohortflow_syncs.sync_runs`` exists (readers on read-only connections check first)."""
    row = con.execute(
        "select count(*) from duckdb_tables() where schema_name = ? and table_name = 'sync_runs' "
        "and database_name = current_database()",
        [STATE_SCHEMA],
    ).fetchone()
    return bool(row and row[0])
