"""Sync state kept in the warehouse, schema ``cohortflow_syncs`` (dbt never touches it).

Every row belongs to one **sync identity** (``sync_id``): the sync's name *and* the destination it
ships to (:func:`sync_identity`). State says what one destination holds for one sync, so it is
keyed by both: a sync pointed at another receiver, file or table starts from nothing there (a first
sync), and no two syncs can read each other's state, outbox or history whatever their names —
two declarations with one name are refused at load anyway. ``sync_name`` stays on every row for
people and queries.

* ``sync_state`` — per sync and record key, what was last *acknowledged* by the destination: the
  hash and the JSON of the values sent. The next run diffs the source against this, never against
  the destination.
* ``sync_runs`` — one row per run (dry runs and paused attempts included) with its counts and error.
* ``sync_records`` — one row per record a run handed to the destination (sent, rejected or skipped
  by the destination, with the reason; the idempotency key; whether it was sent anew because an
  earlier unmarked operation may have arrived, and whether it was replayed), so "what happened to
  user X" is one query.
* ``sync_outbox`` — batches written down *before* they are sent (one row per record, with the
  values sent and its position in the batch), deleted in the transaction that marks them.
* ``sync_outbox_batches`` — one row per outbox batch: when it was made and a fingerprint of the
  destination settings and fields it was encoded for. A batch left behind by a killed or failed run
  is replayed by the next run exactly as it was first sent, under the same idempotency key (see
  ``docs/sync-engine.md``).
* ``sync_refused`` — records the destination refused for good (``rejected``) or did not send by its
  own rule (``skipped``), with the hash refused: they are not sent again until their data changes.
* ``sync_control`` — one row per paused (or once paused) sync.

All times are UTC ``timestamp`` without zone, like the rest of the warehouse. Warehouses created by
an older version get the new tables and columns on first use (``CREATE ... IF NOT EXISTS`` and
``ALTER TABLE ... ADD COLUMN``); existing rows keep their values, new count columns read 0.
"""

from __future__ import annotations

import hashlib
import json

import duckdb

STATE_SCHEMA = "cohortflow_syncs"

STATE_DDL = f"""
create schema if not exists {STATE_SCHEMA};

create table if not exists {STATE_SCHEMA}.sync_state (
    sync_id       varchar,            -- sync_identity(sync_name, destination location)
    sync_name     varchar   not null,
    record_key    varchar   not null,   -- the primary key value; a JSON array of strings when composite
    record_hash   varchar   not null,   -- md5 of the JSON below
    record        json      not null,   -- the values last acknowledged by the destination
    sent_at       timestamp not null,   -- UTC
    run_id        varchar   not null
);

create table if not exists {STATE_SCHEMA}.sync_runs (
    sync_id       varchar,            -- sync_identity(sync_name, destination location)
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
    sync_id       varchar,            -- sync_identity(sync_name, destination location)
    run_id      varchar not null,
    sync_name   varchar not null,
    record_key  varchar not null,
    operation   varchar not null,       -- add / change / remove
    status      varchar not null,       -- sent / rejected / skipped
    reason      varchar                 -- why it was rejected or skipped, as the destination said
);

create table if not exists {STATE_SCHEMA}.sync_outbox (
    sync_id       varchar,            -- sync_identity(sync_name, destination location)
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
    delivery     varchar,               -- new / in_doubt: why the record was put in this batch
    batch_position integer              -- the record's place in its batch (0-based): a replay keeps the order
);

create table if not exists {STATE_SCHEMA}.sync_refused (
    sync_id       varchar,            -- sync_identity(sync_name, destination location)
    sync_name    varchar   not null,
    record_key   varchar   not null,
    operation    varchar   not null,    -- the operation refused
    record_hash  varchar   not null,    -- the data refused: a record with another hash is sent again
    status       varchar   not null,    -- rejected (permanently) / skipped (by the destination's own rule)
    reason       varchar   not null,
    run_id       varchar   not null,
    refused_at   timestamp not null
);

create table if not exists {STATE_SCHEMA}.sync_outbox_batches (
    sync_id      varchar   not null,
    sync_name    varchar   not null,
    batch_key    varchar   not null,    -- the idempotency key
    operation    varchar   not null,
    batch_order  bigint    not null,
    created_at   timestamp not null,    -- start of the run that made the batch (e.g. the webhook's computed_time)
    fingerprint  varchar   not null,    -- destination kind, location, settings and fields the batch was encoded for
    records      integer                -- records written: a batch with fewer rows left is not whole
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
    ("sync_state", "sync_id", "varchar"),
    ("sync_runs", "sync_id", "varchar"),
    ("sync_records", "sync_id", "varchar"),
    ("sync_outbox", "sync_id", "varchar"),
    ("sync_outbox", "batch_position", "integer"),
    ("sync_refused", "sync_id", "varchar"),
    ("sync_outbox_batches", "records", "integer"),
)
# Tables whose rows belong to one sync identity (adopted by :func:`adopt_unkeyed_rows`).
KEYED_TABLES = ("sync_state", "sync_records", "sync_outbox", "sync_refused", "sync_runs")


def sync_identity(sync_name: str, destination_location: str | None) -> str:
    """The key of a sync's rows: its name and where it ships, hashed (32 hex characters).

    The location is the destination's own (a file path, a URL without credentials, a Postgres
    ``postgresql://user@host:port/db/schema.table``), never a secret. ``None`` stands for a plan
    made without a destination (a preview).
    """
    text = json.dumps(["sync", sync_name, destination_location])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def adopt_unkeyed_rows(con: duckdb.DuckDBPyConnection, sync_id: str, sync_name: str, destination_location: str) -> None:
    """Give rows written before sync identities existed (``sync_id`` NULL) to the identity they belong to.

    They belong to this sync's identity when the sync's latest unkeyed run shipped to the same
    location (or no run says where): a warehouse made by an earlier version then carries on with
    the diff it had. Rows of another destination stay unkeyed and are never read.
    """
    row = con.execute(
        f"select count(*) from {STATE_SCHEMA}.sync_runs where sync_name = ? and sync_id is null", [sync_name]
    ).fetchone()
    pending = bool(row and row[0])
    if not pending:
        for table in ("sync_state", "sync_outbox", "sync_refused"):
            row = con.execute(
                f"select count(*) from {STATE_SCHEMA}.{table} where sync_name = ? and sync_id is null", [sync_name]
            ).fetchone()
            if row and row[0]:
                pending = True
                break
    if not pending:
        return
    latest = con.execute(
        f"select destination from {STATE_SCHEMA}.sync_runs where sync_name = ? and sync_id is null "
        "order by started_at desc, run_id desc limit 1",
        [sync_name],
    ).fetchone()
    if latest is not None and latest[0] is not None and latest[0] != destination_location:
        return
    con.begin()
    try:
        for table in KEYED_TABLES:
            con.execute(
                f"update {STATE_SCHEMA}.{table} set sync_id = ? where sync_name = ? and sync_id is null",
                [sync_id, sync_name],
            )
        con.commit()
    except BaseException:
        con.rollback()
        raise


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
