"""run_sync end to end on a real DuckDB file and real files: what a user of a file sync would see."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

import duckdb
import pyarrow as pa
import pytest

from cohortflow.warehouse import connect
from reverse_etl import (
    BatchResult,
    ChangeBatch,
    CsvFileDestination,
    InMemoryDestination,
    RunInfo,
    SourceError,
    SyncError,
    SyncLockedError,
    SyncSpec,
    run_sync,
)
from reverse_etl.lock import SyncLock

SPEC = SyncSpec(
    name="cart_abandoners_csv",
    source_relation="cohorts.cart_abandoners_24h",
    primary_key=["user_id"],
    fields={"user_id": "user_id", "email": "email", "cart_value": "cart_value", "entered_at": "entered_at"},
    mode="mirror",
    batch_size=3,
)
T0 = datetime(2026, 3, 1, 12, 0, 0)
T1 = datetime(2026, 3, 1, 13, 0, 0)
T2 = datetime(2026, 3, 1, 14, 0, 0)


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return tmp_path / "warehouse" / "cohortflow.duckdb"


@pytest.fixture
def con(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(warehouse)
    connection.execute("create schema cohorts")
    connection.execute(
        "create table cohorts.cart_abandoners_24h as select 'u' || lpad(i::varchar, 2, '0') as user_id, "
        "'user' || i || '@example.com' as email, (i * 10 + 0.5)::double as cart_value, "
        "timestamp '2026-03-01 10:00:00' + to_minutes(i) as entered_at, 'not shipped' as note from range(10) t(i)"
    )
    yield connection
    connection.close()


def churn(con: duckdb.DuckDBPyConnection) -> None:
    """u00 and u01 leave, u02's cart grows, u10 and u11 join."""
    con.execute("delete from cohorts.cart_abandoners_24h where user_id in ('u00', 'u01')")
    con.execute("update cohorts.cart_abandoners_24h set cart_value = 999.5 where user_id = 'u02'")
    con.execute(
        "insert into cohorts.cart_abandoners_24h values "
        "('u10', 'new10@example.com', 1.5, timestamp '2026-03-01 11:00:00', 'x'), "
        "('u11', 'new11@example.com', 2.5, timestamp '2026-03-01 11:01:00', 'x')"
    )


def audience(con: duckdb.DuckDBPyConnection) -> list[list[str]]:
    """The source as text rows, sorted by key: what the CSV must hold."""
    rows = con.execute(
        "select user_id, email, cart_value::varchar, strftime(entered_at, '%Y-%m-%d %H:%M:%S.%f') "
        "from cohorts.cart_abandoners_24h order by user_id"
    ).fetchall()
    return [list(r) for r in rows]


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def state(con: duckdb.DuckDBPyConnection, sync_name: str = SPEC.name) -> list[tuple[str, str, str]]:
    return con.execute(
        "select record_key, record_hash, run_id from cohortflow_syncs.sync_state where sync_name = ? order by 1", [sync_name]
    ).fetchall()


def run(con: duckdb.DuckDBPyConnection, destination, now: datetime = T0, **kwargs):  # type: ignore[no-untyped-def]
    return run_sync(con, SPEC, destination, now=now, **kwargs)


def test_first_run_sends_the_whole_audience(con: duckdb.DuckDBPyConnection, tmp_path: Path, warehouse: Path) -> None:
    out = tmp_path / "exports" / "cart_abandoners.csv"
    result = run(con, CsvFileDestination(out))

    assert result.status == "succeeded"
    assert (result.rows_added, result.rows_changed, result.rows_removed, result.rows_processed) == (10, 0, 0, 10)
    assert result.audience_size == 10
    assert result.sample_added == ("u00", "u01", "u02", "u03", "u04")
    assert result.destination_location == str(out)
    header, rows = read_csv(out)
    assert header == ["user_id", "email", "cart_value", "entered_at"]
    assert rows == audience(con)

    manifest = json.loads((tmp_path / "exports" / "cart_abandoners.csv.manifest.json").read_text())
    assert manifest["run_id"] == result.run_id and manifest["sync_name"] == SPEC.name
    assert manifest["row_count"] == 10 and manifest["rows_added"] == 10
    import hashlib

    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert len(state(con)) == 10
    # The lock file lives beside the warehouse, not in the exports.
    assert (warehouse.parent / "cohortflow.duckdb.locks" / f"{SPEC.name}.lock").exists()


def test_after_churn_only_the_diff_is_sent_and_the_file_follows(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "cart_abandoners.csv"
    first = run(con, CsvFileDestination(out), now=T0)
    churn(con)
    second = run(con, CsvFileDestination(out), now=T1)

    assert (second.rows_added, second.rows_changed, second.rows_removed, second.rows_unchanged) == (2, 1, 2, 7)
    assert second.sample_added == ("u10", "u11") and second.sample_removed == ("u00", "u01")
    assert read_csv(out)[1] == audience(con)
    changes = read_csv(out.with_name("cart_abandoners.csv.changes") / f"{second.run_id}.csv")
    assert changes == (["operation", "record_key"], [["remove", "u00"], ["remove", "u01"], ["change", "u02"], ["add", "u10"], ["add", "u11"]])

    # "What happened to user u01?" is one query over the run log.
    history = con.execute(
        "select r.started_at, s.operation, s.status from cohortflow_syncs.sync_records s "
        "join cohortflow_syncs.sync_runs r using (run_id) where s.sync_name = ? and s.record_key = 'u01' order by r.started_at",
        [SPEC.name],
    ).fetchall()
    assert history == [(T0, "add", "sent"), (T1, "remove", "sent")]
    runs = con.execute(
        "select run_id, status, rows_added, rows_changed, rows_removed from cohortflow_syncs.sync_runs order by started_at"
    ).fetchall()
    assert runs == [(first.run_id, "succeeded", 10, 0, 0), (second.run_id, "succeeded", 2, 1, 2)]

    # Nothing changed since: nothing sent, the file is rewritten identical.
    third = run(con, CsvFileDestination(out), now=T2)
    assert (third.rows_processed, third.rows_unchanged) == (0, 10)
    assert read_csv(out)[1] == audience(con)


class FailingCsvDestination(CsvFileDestination):
    """A CSV destination whose disk 'fills up' after the first batch of rows."""

    def write_rows(self, out: IO[bytes], schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
        def first_then_fail() -> Iterator[pa.RecordBatch]:
            for index, batch in enumerate(batches):
                if index == 1:
                    raise OSError(28, "No space left on device")
                yield batch

        return super().write_rows(out, schema, first_then_fail())


def test_destination_error_fails_the_run_and_keeps_the_last_success(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "cart_abandoners.csv"
    run(con, CsvFileDestination(out), now=T0)
    before_state, before_bytes = state(con), out.read_bytes()
    churn(con)

    with pytest.raises(SyncError) as info:
        run(con, FailingCsvDestination(out), now=T1)
    assert "No space left on device" in str(info.value) and SPEC.name in str(info.value)
    failed = info.value.result
    assert failed is not None and failed.status == "failed" and failed.rows_processed == 0
    row = con.execute(
        "select status, error, rows_added from cohortflow_syncs.sync_runs where run_id = ?", [failed.run_id]
    ).fetchone()
    assert row is not None and row[0] == "failed" and "No space left on device" in row[1] and row[2] == 0
    assert state(con) == before_state
    assert out.read_bytes() == before_bytes  # the old file, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert con.execute("select count(*) from cohortflow_syncs.sync_records where run_id = ?", [failed.run_id]).fetchone() == (0,)

    retry = run(con, CsvFileDestination(out), now=T2)
    assert (retry.rows_added, retry.rows_changed, retry.rows_removed) == (2, 1, 2)
    assert read_csv(out)[1] == audience(con)


class FlakyApi(InMemoryDestination):
    """A record API that accepts the first batch of a run and then times out."""

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        if batch.sequence == 2:
            raise TimeoutError("read timeout after 10 s")
        return super().send_batch(run, batch)


def test_record_destination_failure_keeps_what_was_acknowledged(con: duckdb.DuckDBPyConnection) -> None:
    api = FlakyApi()
    with pytest.raises(SyncError, match="TimeoutError: read timeout after 10 s"):
        run(con, api, now=T0)
    # Batch 1 (3 records) was acknowledged: exactly those are marked as sent, nothing else.
    assert [key for key, _, _ in state(con)] == ["u00", "u01", "u02"]
    assert sorted(api.records) == ["u00", "u01", "u02"]

    healthy = InMemoryDestination()
    healthy.records = api.records  # the same remote system, reached again
    result = run(con, healthy, now=T1)
    assert result.status == "succeeded" and result.rows_added == 7
    assert sorted(healthy.records) == [r[0] for r in audience(con)]
    assert con.execute(
        "select list(status order by started_at) from cohortflow_syncs.sync_runs where sync_name = ?", [SPEC.name]
    ).fetchone() == (["failed", "succeeded"],)


def test_a_destination_batch_cap_is_respected(con: duckdb.DuckDBPyConnection) -> None:
    capped = InMemoryDestination(max_batch_size=2)  # smaller than the sync's batch_size of 3
    run(con, capped)
    assert [n for _, _, n in capped.batches] == [2, 2, 2, 2, 2]
    assert len(capped.records) == 10


class PickyApi(InMemoryDestination):
    """Rejects e-mails on a blocked domain, like a partner refusing single records."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = "user3@example.com"

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        rejected = {k: "invalid email" for k, r in zip(batch.keys, batch.to_pylist()) if r["email"] == self.blocked}
        kept = ChangeBatch(batch.operation, batch.sequence, tuple(k for k in batch.keys if k not in rejected),
                           batch.records.filter(pa.array([k not in rejected for k in batch.keys])))
        super().send_batch(run, kept)
        return BatchResult(rejected=rejected)


def test_rejected_records_are_logged_and_retried_next_run(con: duckdb.DuckDBPyConnection) -> None:
    api = PickyApi()
    first = run(con, api, now=T0)
    assert first.status == "succeeded"  # partial success is success
    assert (first.rows_added, first.rows_rejected, first.rows_processed) == (9, 1, 10)
    assert first.rejected_sample == (("u03", "invalid email"),)
    assert "u03" not in [k for k, _, _ in state(con)]
    assert con.execute(
        "select operation, status, reason from cohortflow_syncs.sync_records where record_key = 'u03'"
    ).fetchall() == [("add", "rejected", "invalid email")]

    api.blocked = "nobody"  # the partner fixed it
    second = run(con, api, now=T1)
    assert (second.rows_added, second.rows_rejected, second.rows_unchanged) == (1, 0, 9)
    assert sorted(api.records) == [r[0] for r in audience(con)]


def test_dry_run_sends_nothing_and_changes_no_state(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "cart_abandoners.csv"
    dry = run(con, CsvFileDestination(out), dry_run=True)
    assert dry.status == "dry_run" and dry.rows_added == 10
    assert not out.exists() and state(con) == []

    run(con, CsvFileDestination(out), now=T1)
    churn(con)
    before_state, before_bytes = state(con), out.read_bytes()
    dry = run(con, CsvFileDestination(out), now=T2, dry_run=True)
    assert (dry.rows_added, dry.rows_changed, dry.rows_removed) == (2, 1, 2)
    assert "nothing was sent" in dry.format_text()
    assert state(con) == before_state and out.read_bytes() == before_bytes
    assert con.execute(
        "select status, dry_run, rows_added from cohortflow_syncs.sync_runs where run_id = ?", [dry.run_id]
    ).fetchone() == ("dry_run", True, 2)
    assert con.execute("select count(*) from cohortflow_syncs.sync_records where run_id = ?", [dry.run_id]).fetchone() == (0,)


class BlockingApi(InMemoryDestination):
    """Holds its first batch until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.inside, self.release = threading.Event(), threading.Event()

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        self.inside.set()
        assert self.release.wait(10)
        return super().send_batch(run, batch)


def test_a_second_concurrent_run_of_the_same_sync_is_refused(con: duckdb.DuckDBPyConnection, warehouse: Path) -> None:
    api = BlockingApi()
    outcome: list[object] = []
    worker_con = duckdb.connect(str(warehouse))  # same database, own connection, like a second Dagster step
    worker = threading.Thread(target=lambda: outcome.append(run(worker_con, api)))
    worker.start()
    try:
        assert api.inside.wait(10)
        with pytest.raises(SyncLockedError, match=rf"sync '{SPEC.name}' is already running \(pid \d+, run "):
            run(con, InMemoryDestination())
        # Another sync is not blocked by it.
        other = SyncSpec(name="other_sync", source_relation=SPEC.source_relation, primary_key=["user_id"])
        assert run_sync(con, other, InMemoryDestination()).status == "succeeded"
    finally:
        api.release.set()
        worker.join(10)
        worker_con.close()
    assert outcome and outcome[0].status == "succeeded"  # type: ignore[attr-defined]
    # The refused attempt left no run row behind.
    assert con.execute("select count(*) from cohortflow_syncs.sync_runs where sync_name = ?", [SPEC.name]).fetchone() == (1,)


def test_lock_excludes_another_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from reverse_etl.lock import SyncLock
            lock = SyncLock({str(tmp_path)!r}, "s")
            lock.acquire("other process")
            print("held", flush=True)
            sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(SyncLockedError, match=r"sync 's' is already running \(pid \d+, other process\)"):
            SyncLock(tmp_path, "s").acquire()
    finally:
        holder.communicate("\n", timeout=10)
    with SyncLock(tmp_path, "s"):  # released when the holder exits
        pass


def test_a_killed_run_is_marked_abandoned_and_the_next_run_finishes(tmp_path: Path, warehouse: Path, con: duckdb.DuckDBPyConnection) -> None:
    out = tmp_path / "cart_abandoners.csv"
    con.close()  # DuckDB allows one writing process at a time
    script = textwrap.dedent(f"""
        import os
        from cohortflow.warehouse import connect
        from reverse_etl import CsvFileDestination, SyncSpec, run_sync

        class DiesMidWrite(CsvFileDestination):
            def write_rows(self, out, schema, batches):
                out.write(b"user_id,email\\npartial")
                out.flush()
                os._exit(3)  # power cut: no exception handler, no cleanup

        spec = SyncSpec(**{dict(name=SPEC.name, source_relation=SPEC.source_relation, primary_key=list(SPEC.primary_key),
                                fields=dict(SPEC.fields or {}), mode="mirror", batch_size=3)!r})
        run_sync(connect({str(warehouse)!r}), spec, DiesMidWrite({str(out)!r}))
    """)
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert died.returncode == 3, died.stderr
    assert not out.exists()
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) == 1  # left by the dead run

    con = connect(warehouse)
    try:
        result = run(con, CsvFileDestination(out), now=T1)
        assert result.rows_added == 10 and read_csv(out)[1] == audience(con)
        assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
        statuses = con.execute("select status from cohortflow_syncs.sync_runs order by started_at").fetchall()
        assert sorted(s for (s,) in statuses) == ["abandoned", "succeeded"]
    finally:
        con.close()


def test_non_unique_key_fails_the_run_naming_the_key(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    con.execute("insert into cohorts.cart_abandoners_24h values ('u04', 'dup@example.com', 1, timestamp '2026-03-01 11:00:00', 'x')")
    with pytest.raises(SourceError, match=r"primary key \(user_id\) of 'cohorts.cart_abandoners_24h' is not unique: 1 key\(s\) repeat, e.g. 'u04' \(2 rows\)") as info:
        run(con, CsvFileDestination(tmp_path / "a.csv"))
    assert info.value.result is not None and info.value.result.status == "failed"
    assert con.execute("select status from cohortflow_syncs.sync_runs").fetchall() == [("failed",)]
    assert not (tmp_path / "a.csv").exists()


def test_a_directory_as_destination_fails_before_anything_is_planned(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with pytest.raises(SyncError, match=r"csv destination .* is a directory"):
        run(con, CsvFileDestination(tmp_path))
    assert state(con) == []
