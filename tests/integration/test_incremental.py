"""Incremental builds give the same answer as a full rebuild, and keep no trace of as_of.

A warehouse is built at as_of T1, then more events arrive (late ones with an old event_time among
them) and it is built incrementally at T2; then a batch arrives with an ingest clock older than the
watermark (the fallback path of int_events) and it is built again at T3. After each incremental
build a copy of the same warehouse is rebuilt with `--full-refresh` at the same as_of, and every
table and view of the marts, cohorts and intermediate schemas (found in the warehouse, not listed
here) must hold the same rows. Finally the incremental warehouse is built at the earlier T1 again:
it must give the full rebuild's time-travel answer, late events included.

The per-day state (int_user_daily_state, macros/daily_state.sql) is part of what is compared, and a
second test checks that reading it gives, at many as_of moments (mid-day, exactly midnight, a
microsecond either side, in the past), exactly what reading every event gives (`cohortflow_daily_state:
false`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cohortflow.generate import generate
from cohortflow.ingest import ingest_files
from cohortflow.warehouse import connect

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"

COMPARED_SCHEMAS = ("marts", "cohorts", "intermediate")
# Columns holding the wall clock of a dbt invocation (when a row was copied, when the registry was
# computed): they differ between any two builds, incremental or not, so they are left out.
BOOKKEEPING_COLUMNS = {"dbt_loaded_at", "last_computed_at"}

T1 = "2025-03-02 12:00:00"
T2 = "2025-03-03 18:00:00"
T3 = "2025-03-04 00:00:00"

pytestmark = pytest.mark.slow  # seven dbt invocations on a few hundred users, ~5 s each


def run_dbt(args: list[str], warehouse: Path, scratch: Path, as_of: str, **extra_vars: Any) -> str:
    """Run the venv's dbt against `warehouse` at `as_of` with its own target / log folders; return stdout."""
    dbt = Path(sys.executable).parent / "dbt"
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    result = subprocess.run(
        [
            str(dbt), *args,
            "--vars", json.dumps({"warehouse": str(warehouse), "as_of": as_of, **extra_vars}),
            "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
            "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs"),
        ],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"dbt {' '.join(args)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def ingest_events(warehouse: Path, folder: Path, clock: datetime, *, with_users: bool = False) -> None:
    con = connect(warehouse)
    try:
        if with_users:
            ingest_files(con, [folder / "users.csv"], "csv", entity="users", now=clock)
            ingest_files(con, [folder / "items.csv"], "csv", entity="items", now=clock)
        summary = ingest_files(con, sorted(folder.glob("events-*.jsonl.gz")), "amplitude-export", now=clock)
        assert summary.files and all(f.rows_loaded > 0 for f in summary.files), summary.format_text()
    finally:
        con.close()


def _normalise(value: Any) -> Any:
    # Sums over a different grouping of rows may differ in the last bits of a double. Money is an exact
    # decimal: its sums must be equal digit for digit, however the rows were grouped.
    if isinstance(value, float):
        return round(value, 6)
    return value


def snapshot(warehouse: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every relation of the compared schemas -> its rows (bookkeeping columns left out), sorted."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        con.execute("set timezone = 'UTC'")
        relations = con.execute(
            f"""
            select table_schema, table_name from information_schema.tables
            where table_schema in ({', '.join('?' for _ in COMPARED_SCHEMAS)})
            order by 1, 2
            """,
            list(COMPARED_SCHEMAS),
        ).fetchall()
        tables = {}
        for schema, name in relations:
            columns = [
                row[0]
                for row in con.execute(
                    "select column_name from information_schema.columns "
                    "where table_schema = ? and table_name = ? order by ordinal_position",
                    [schema, name],
                ).fetchall()
                if row[0] not in BOOKKEEPING_COLUMNS
            ]
            selected = ", ".join(f'"{c}"' for c in columns)
            rows = con.execute(f'select {selected} from "{schema}"."{name}"').fetchall()
            tables[f"{schema}.{name}"] = sorted((tuple(map(_normalise, row)) for row in rows), key=repr)
        return tables
    finally:
        con.close()


def assert_same_tables(incremental: dict[str, list[tuple[Any, ...]]], full: dict[str, list[tuple[Any, ...]]]) -> None:
    assert sorted(incremental) == sorted(full)
    differing = {}
    for relation, rows in full.items():
        if incremental[relation] != rows:
            only_incremental = set(incremental[relation]) - set(rows)
            only_full = set(rows) - set(incremental[relation])
            differing[relation] = {
                "rows (incremental, full)": (len(incremental[relation]), len(rows)),
                "only incremental": sorted(only_incremental, key=repr)[:3],
                "only full": sorted(only_full, key=repr)[:3],
            }
    assert differing == {}


def full_refresh_copy(warehouse: Path, folder: Path, as_of: str) -> dict[str, list[tuple[Any, ...]]]:
    """The same raw data in a copy of `warehouse`, rebuilt from scratch at `as_of`."""
    folder.mkdir()
    # Same file name in another folder: DuckDB names the catalog after the file, and views refer to it.
    copy = folder / warehouse.name
    shutil.copyfile(warehouse, copy)
    run_dbt(["run", "--full-refresh"], copy, folder, as_of)
    return snapshot(copy)


@pytest.fixture(scope="module")
def data_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("incremental_data")
    # base: the first 30 days. late: 3 days overlapping the end of base (events before T1 arrive
    # after the T1 build). backdated: more late events, ingested with a clock older than the watermark.
    sets = {
        "base": dict(users=300, days=30, seed=7, end=datetime(2025, 3, 3)),
        "late": dict(users=200, days=3, seed=8, end=datetime(2025, 3, 4)),
        "backdated": dict(users=60, days=4, seed=9, end=datetime(2025, 3, 4)),
    }
    for name, arguments in sets.items():
        generate(root / name, **arguments)
    return {name: root / name for name in sets}


def test_incremental_builds_equal_full_rebuilds_and_time_travel(data_sets: dict[str, Path], tmp_path: Path) -> None:
    warehouse = tmp_path / "incremental" / "cohortflow.duckdb"
    warehouse.parent.mkdir()
    scratch = tmp_path / "incremental"

    ingest_events(warehouse, data_sets["base"], datetime(2025, 3, 10), with_users=True)
    run_dbt(["run"], warehouse, scratch, T1)
    at_t1_before_late_events = snapshot(warehouse)

    # 1. New and late events, ingested after the watermark: the cheap ingested_at path.
    ingest_events(warehouse, data_sets["late"], datetime(2025, 3, 11))
    output = run_dbt(["run"], warehouse, scratch, T2)
    assert "matching every event_id" not in output
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        loads = con.execute(
            "select count(distinct dbt_loaded_at), count(*) from intermediate.int_events"
        ).fetchone()
        late = con.execute(
            f"select count(*) from intermediate.int_events where event_at <= timestamp '{T1}' "
            "and ingested_at = timestamp '2025-03-11'"
        ).fetchone()[0]
    finally:
        con.close()
    # The base rows were kept, not copied again: two loads live side by side.
    assert loads[0] == 2, loads
    assert late > 0, "the late data set has no events before T1: the test would not cover late arrivals"
    assert_same_tables(snapshot(warehouse), full_refresh_copy(warehouse, tmp_path / "full_t2", T2))

    # 2. A batch whose ingest clock is older than the watermark: int_events must notice and match by event_id.
    ingest_events(warehouse, data_sets["backdated"], datetime(2025, 3, 10, 12))
    output = run_dbt(["run"], warehouse, scratch, T3)
    assert "matching every event_id" in output
    assert_same_tables(snapshot(warehouse), full_refresh_copy(warehouse, tmp_path / "full_t3", T3))

    # 3. Time travel after incremental runs: as_of T1 again gives the full rebuild's answer at T1,
    # which now includes the late events (nothing about T2 / T3 is stored in incremental state).
    run_dbt(["run"], warehouse, scratch, T1)
    at_t1_now = snapshot(warehouse)
    assert_same_tables(at_t1_now, full_refresh_copy(warehouse, tmp_path / "full_t1", T1))
    assert len(at_t1_now["intermediate.int_events_as_of"]) > len(at_t1_before_late_events["intermediate.int_events_as_of"])


# Moments that put the windows' edges everywhere: mid-day, exactly on midnight (the start day of a
# last(N, 'days') window is then a whole day), a microsecond either side of it, and well in the past.
STATE_MOMENTS = ("2025-03-02 12:00:00", "2025-03-03 00:00:00", "2025-03-02 23:59:59.999999",
                 "2025-03-03 00:00:00.000001", "2025-02-10 07:30:00")


def test_the_per_day_state_gives_what_reading_every_event_gives(data_sets: dict[str, Path], tmp_path: Path) -> None:
    state = tmp_path / "state" / "cohortflow.duckdb"
    state.parent.mkdir()
    ingest_events(state, data_sets["base"], datetime(2025, 3, 10), with_users=True)
    ingest_events(state, data_sets["late"], datetime(2025, 3, 11))
    events = tmp_path / "events" / "cohortflow.duckdb"
    events.parent.mkdir()
    shutil.copyfile(state, events)
    for moment in STATE_MOMENTS:
        run_dbt(["run"], state, state.parent, moment)
        run_dbt(["run"], events, events.parent, moment, cohortflow_daily_state=False)
        read_state, read_events = snapshot(state), snapshot(events)
        for table in ("intermediate.int_user_daily_state", "intermediate.int_user_daily_state_values"):
            assert read_state.pop(table)  # the state is there to be read...
            read_events.pop(table)  # ...and the reference reading ignores it
        assert_same_tables(read_state, read_events)
