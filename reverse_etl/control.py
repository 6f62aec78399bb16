"""Pause / resume a sync, and read what it did: its runs, and what happened to one record.

Pausing is stored in the warehouse (``cohortflow_syncs.sync_control``), so it holds for every
process that runs the sync (scheduler, CLI, notebook). A paused sync's :func:`~reverse_etl.run_sync`
sends nothing and returns status ``paused``; the run in progress when a pause is set is not
interrupted (DuckDB lets one process write at a time, so a pause is set between runs).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb

from reverse_etl.errors import SyncSpecError
from reverse_etl.spec import SYNC_NAME_PATTERN
from reverse_etl.state import STATE_SCHEMA, ensure_state_tables, state_tables_exist


def _check_name(sync_name: str) -> None:
    if not isinstance(sync_name, str) or not SYNC_NAME_PATTERN.match(sync_name):
        raise SyncSpecError(f"sync {sync_name!r}: not a sync name (lower_snake_case, starting with a letter)")


def _utc_naive(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _control_table_exists(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "select count(*) from duckdb_tables() where schema_name = ? and table_name = 'sync_control' "
        "and database_name = current_database()",
        [STATE_SCHEMA],
    ).fetchone()
    return bool(row and row[0])


def pause_sync(
    con: duckdb.DuckDBPyConnection, sync_name: str, *, reason: str | None = None, now: datetime | None = None
) -> None:
    """Pause a sync: its runs send nothing until :func:`resume_sync`.

    Pausing a paused sync updates the reason and keeps the original pause time.

    Parameters
    ----------
    con
        Writable warehouse connection.
    sync_name
        The sync (it need not have run yet).
    reason
        Why, shown in run results and ``sync_runs.note`` (e.g. "partner migration until Friday").
    now
        Pause time (UTC); default the current time.

    Raises
    ------
    SyncSpecError
        When ``sync_name`` is not a valid sync name.
    """
    _check_name(sync_name)
    ensure_state_tables(con)
    moment = _utc_naive(now or datetime.now(UTC))
    con.begin()
    try:
        row = con.execute(
            f"select paused, paused_at from {STATE_SCHEMA}.sync_control where sync_name = ?", [sync_name]
        ).fetchone()
        paused_at = row[1] if row and row[0] else moment
        con.execute(f"delete from {STATE_SCHEMA}.sync_control where sync_name = ?", [sync_name])
        con.execute(
            f"insert into {STATE_SCHEMA}.sync_control (sync_name, paused, reason, paused_at, resumed_at) values (?, true, ?, ?, null)",
            [sync_name, reason, paused_at],
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise


def resume_sync(con: duckdb.DuckDBPyConnection, sync_name: str, *, now: datetime | None = None) -> None:
    """Resume a paused sync (no-op when it is not paused). Its next run sends what is pending.

    Raises
    ------
    SyncSpecError
        When ``sync_name`` is not a valid sync name.
    """
    _check_name(sync_name)
    ensure_state_tables(con)
    con.execute(
        f"update {STATE_SCHEMA}.sync_control set paused = false, resumed_at = ? where sync_name = ? and paused",
        [_utc_naive(now or datetime.now(UTC)), sync_name],
    )


def pause_info(con: duckdb.DuckDBPyConnection, sync_name: str) -> dict[str, Any] | None:
    """``{"reason", "paused_at"}`` when the sync is paused, else ``None`` (works on read-only connections)."""
    _check_name(sync_name)
    if not _control_table_exists(con):
        return None
    row = con.execute(
        f"select reason, paused_at from {STATE_SCHEMA}.sync_control where sync_name = ? and paused", [sync_name]
    ).fetchone()
    return {"reason": row[0], "paused_at": row[1]} if row else None


def is_paused(con: duckdb.DuckDBPyConnection, sync_name: str) -> bool:
    """Whether the sync is paused (works on read-only connections)."""
    return pause_info(con, sync_name) is not None


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    columns = [d[0] for d in cursor.description or ()]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def sync_history(con: duckdb.DuckDBPyConnection, sync_name: str, limit: int = 10) -> list[dict[str, Any]]:
    """The sync's runs (``sync_runs`` rows as dicts), newest first.

    Dry runs and paused attempts are included (``dry_run``, ``status``). Empty when the sync never ran.
    """
    _check_name(sync_name)
    if not state_tables_exist(con):
        return []
    return _rows(con.execute(
        f"select * from {STATE_SCHEMA}.sync_runs where sync_name = ? order by started_at desc, run_id desc limit ?",
        [sync_name, int(limit)],
    ))


def record_history(
    con: duckdb.DuckDBPyConnection, sync_name: str, record_key: str, limit: int = 20
) -> list[dict[str, Any]]:
    """What happened to one record, newest first: one dict per time a run handed it to the destination.

    Keys: ``run_id``, ``run_started_at``, ``run_status``, ``recorded_at`` (when the run marked it),
    ``operation`` (add / change / remove), ``status`` (sent / rejected / skipped), ``reason``,
    ``batch_key`` (the idempotency key it went under), ``delivery`` (``new``, or ``in_doubt``: sent
    because an earlier, unmarked operation on it may or may not have arrived), ``replayed`` (re-sent
    under the key of a batch an earlier run did not mark) and ``record_hash``.

    Records never sent (never in the audience, or excluded for consent / suppression) have no rows.
    What the destination holds now is ``sync_state`` (see ``docs/sync-engine.md``).
    """
    _check_name(sync_name)
    if not state_tables_exist(con):
        return []
    return _rows(con.execute(
        f"select s.run_id, r.started_at as run_started_at, r.status as run_status, "
        "coalesce(s.recorded_at, r.started_at) as recorded_at, s.operation, s.status, s.reason, s.batch_key, s.delivery, "
        "s.replayed, s.record_hash "
        f"from {STATE_SCHEMA}.sync_records s left join {STATE_SCHEMA}.sync_runs r using (run_id) "
        "where s.sync_name = ? and s.record_key = ? "
        "order by coalesce(s.recorded_at, r.started_at) desc, r.started_at desc limit ?",
        [sync_name, record_key, int(limit)],
    ))
