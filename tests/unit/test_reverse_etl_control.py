"""Pause / resume, the run history, "what happened to record X", and migrating an older warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from reverse_etl import (
    BatchResult,
    ChangeBatch,
    InMemoryDestination,
    RunInfo,
    SyncSpec,
    SyncSpecError,
    TransientDestinationError,
    ensure_state_tables,
    is_paused,
    pause_sync,
    record_history,
    resume_sync,
    run_sync,
    sync_history,
)

T0 = datetime(2026, 3, 1, 12, 0, 0)
SPEC = SyncSpec(name="vip_api", source_relation="c.vip", primary_key=["user_id"], batch_size=2)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("create schema c")
    connection.execute("create table c.vip as select 'u' || i as user_id, i as score from range(5) t(i)")
    yield connection
    connection.close()


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def test_a_paused_sync_sends_nothing_until_resumed(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    assert not is_paused(con, SPEC.name)
    pause_sync(con, SPEC.name, reason="partner migration", now=at(0))
    pause_sync(con, SPEC.name, reason="partner migration, week 2", now=at(5))  # keeps the first pause time
    assert is_paused(con, SPEC.name)
    api = InMemoryDestination()

    paused = run_sync(con, SPEC, api, lock_dir=tmp_path, now=at(6))
    assert paused.status == "paused" and paused.paused and not paused.succeeded
    assert paused.note == "paused since 2026-03-01 12:00:00 UTC: partner migration, week 2"
    assert "paused: nothing was sent (paused since 2026-03-01 12:00:00 UTC" in paused.format_text()
    assert api.received == [] and paused.rows_processed == 0

    dry = run_sync(con, SPEC, api, lock_dir=tmp_path, now=at(7), dry_run=True)
    assert (dry.status, dry.dry_run, dry.rows_added) == ("paused", True, 5)  # what resuming would send
    assert "a real run sends nothing until the sync is resumed" in dry.format_text()
    assert api.received == []
    assert con.execute("select count(*) from cohortflow_syncs.sync_state").fetchone() == (0,)

    resume_sync(con, SPEC.name, now=at(8))
    assert not is_paused(con, SPEC.name)
    sent = run_sync(con, SPEC, api, lock_dir=tmp_path, now=at(9))
    assert sent.status == "succeeded" and sent.rows_added == 5 and sent.note is None
    statuses = [(r["status"], r["dry_run"], r["note"] is not None) for r in sync_history(con, SPEC.name)]
    assert statuses == [("succeeded", False, False), ("paused", True, True), ("paused", False, True)]


def test_pausing_holds_the_outbox_too(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    class Down(InMemoryDestination):
        def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
            raise TransientDestinationError("502 Bad Gateway")

    with pytest.raises(TransientDestinationError):
        run_sync(con, SPEC, Down(), lock_dir=tmp_path, now=at(0))
    waiting = con.execute("select count(*) from cohortflow_syncs.sync_outbox").fetchone()
    assert waiting == (5,)
    pause_sync(con, SPEC.name)
    api = InMemoryDestination()
    run_sync(con, SPEC, api, lock_dir=tmp_path, now=at(1))
    assert api.received == [] and con.execute("select count(*) from cohortflow_syncs.sync_outbox").fetchone() == waiting
    resume_sync(con, SPEC.name)
    assert run_sync(con, SPEC, api, lock_dir=tmp_path, now=at(2)).rows_replayed == 5


def test_control_refuses_a_bad_sync_name(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(SyncSpecError, match=r"sync 'Bad Name': not a sync name"):
        pause_sync(con, "Bad Name")
    with pytest.raises(SyncSpecError):
        is_paused(con, "x'; drop table y; --")


def test_history_of_runs_and_of_one_record(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    assert sync_history(con, SPEC.name) == [] and record_history(con, SPEC.name, "u1") == []  # nothing yet, nothing created

    class Picky(InMemoryDestination):
        def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
            super().send_batch(run, batch)
            return BatchResult(permanent={"u3": "invalid phone"} if "u3" in batch.keys else {})

    api = Picky()
    first = run_sync(con, SPEC, api, lock_dir=tmp_path, now=at(0))
    con.execute("update c.vip set score = 10 where user_id = 'u1'")
    second = run_sync(con, SPEC, api, lock_dir=tmp_path, now=at(1))
    con.execute("delete from c.vip where user_id = 'u1'")
    third = run_sync(con, SPEC, api, lock_dir=tmp_path, now=at(2))

    runs = sync_history(con, SPEC.name, limit=2)
    assert [r["run_id"] for r in runs] == [third.run_id, second.run_id]
    assert runs[0]["rows_removed"] == 1 and runs[1]["rows_changed"] == 1

    u1 = record_history(con, SPEC.name, "u1")
    assert [(h["run_id"], h["operation"], h["status"], h["recorded_at"]) for h in u1] == [
        (third.run_id, "remove", "sent", at(2)), (second.run_id, "change", "sent", at(1)), (first.run_id, "add", "sent", at(0)),
    ]
    assert all(len(h["batch_key"]) == 32 for h in u1) and len({h["batch_key"] for h in u1}) == 3
    u3 = record_history(con, SPEC.name, "u3")
    assert [(h["operation"], h["status"], h["reason"], h["run_status"]) for h in u3] == [("add", "rejected", "invalid phone", "succeeded")]
    assert record_history(con, SPEC.name, "u1", limit=1)[0]["operation"] == "remove"


OLD_DDL = """
create schema cohortflow_syncs;
create table cohortflow_syncs.sync_state (sync_name varchar not null, record_key varchar not null, record_hash varchar not null,
    record json not null, sent_at timestamp not null, run_id varchar not null);
create table cohortflow_syncs.sync_runs (run_id varchar not null, sync_name varchar not null, started_at timestamp not null,
    finished_at timestamp, status varchar not null, mode varchar not null, dry_run boolean not null, full_resync boolean not null,
    rows_processed bigint not null default 0, rows_added bigint not null default 0, rows_changed bigint not null default 0,
    rows_removed bigint not null default 0, rows_rejected bigint not null default 0, rows_skipped bigint not null default 0,
    error varchar, destination varchar);
create table cohortflow_syncs.sync_records (run_id varchar not null, sync_name varchar not null, record_key varchar not null,
    operation varchar not null, status varchar not null, reason varchar);
"""


def test_an_older_warehouse_is_migrated_in_place(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    con.execute(OLD_DDL)
    # What the previous engine version left: run 1 sent u0..u4.
    con.execute(
        "insert into cohortflow_syncs.sync_runs (run_id, sync_name, started_at, finished_at, status, mode, dry_run, full_resync, rows_added) "
        "values ('old-run', 'vip_api', timestamp '2026-02-01', timestamp '2026-02-01', 'succeeded', 'mirror', false, false, 5)"
    )
    con.execute(
        "insert into cohortflow_syncs.sync_state select 'vip_api', user_id, md5(to_json({'score': score, 'user_id': user_id})), "
        "to_json({'score': score, 'user_id': user_id}), timestamp '2026-02-01', 'old-run' from c.vip"
    )
    con.execute("insert into cohortflow_syncs.sync_records select 'old-run', 'vip_api', user_id, 'add', 'sent', null from c.vip")

    ensure_state_tables(con)
    ensure_state_tables(con)  # idempotent
    columns = {r[0] for r in con.execute("describe cohortflow_syncs.sync_runs").fetchall()}
    assert {"rows_held", "rows_excluded_consent", "rows_replayed", "note"} <= columns
    assert {"batch_key", "recorded_at"} <= {r[0] for r in con.execute("describe cohortflow_syncs.sync_records").fetchall()}
    old = sync_history(con, SPEC.name)[0]
    assert (old["run_id"], old["rows_added"], old["rows_held"]) == ("old-run", 5, 0)

    con.execute("update c.vip set score = 99 where user_id = 'u2'")
    api = InMemoryDestination()
    result = run_sync(con, SPEC, api, lock_dir=tmp_path, now=at(0))
    assert (result.rows_changed, result.rows_unchanged) == (1, 4)  # the old state still counts
    assert [h["operation"] for h in record_history(con, SPEC.name, "u2")] == ["change", "add"]
