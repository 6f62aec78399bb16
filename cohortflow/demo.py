"""`cohortflow demo`: sample data → warehouse → cohorts, properties, syncs, in one command."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import duckdb

from cohortflow import warehouse
from cohortflow.as_of import format_as_of
from cohortflow.warehouse import PROJECT_ROOT

SAMPLE_DIR = PROJECT_ROOT / "data" / "generated"


class DemoError(RuntimeError):
    """The demo could not finish; the message says which stage and why."""


def _is_demo_warehouse(path: Path, sample_dir: Path) -> bool:
    """True when every file ever ingested into ``path`` came from the demo's sample folder."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        exists = con.execute(
            "select count(*) from information_schema.tables where table_schema = 'raw' and table_name = 'ingested_files'"
        ).fetchone()[0]
        if not exists:
            return con.execute("select count(*) from information_schema.tables").fetchone()[0] == 0
        foreign = con.execute(
            "select count(*) from raw.ingested_files where not starts_with(source_file, ?)", [str(sample_dir)]
        ).fetchone()[0]
        return foreign == 0
    finally:
        con.close()


def _reset_warehouse(path: Path, sample_dir: Path) -> None:
    if not path.exists():
        return
    if not _is_demo_warehouse(path, sample_dir):
        raise DemoError(
            f"{path} holds data that the demo did not load; the demo will not delete it. "
            f"Run `cohortflow demo --keep`, or point {warehouse.WAREHOUSE_ENV_VAR} at another file."
        )
    for leftover in (path, path.with_name(path.name + ".wal")):
        if leftover.exists():
            leftover.unlink()


def run_demo(
    *,
    users: int = 2000,
    days: int = 60,
    seed: int = 42,
    fresh: bool = True,
    sample_dir: Path = SAMPLE_DIR,
    echo: Callable[[str], None] = print,
) -> None:
    """Generate, ingest and run everything as of the last generated event, printing each stage."""
    from cohortflow.generate import generate
    from cohortflow.ingest import IngestError, ingest_files
    from cohortflow.pipeline import PipelineError, run_pipeline

    started = time.perf_counter()
    path = warehouse.warehouse_path()
    os.environ[warehouse.WAREHOUSE_ENV_VAR] = str(path)
    sample_dir = sample_dir.resolve()
    if fresh:
        _reset_warehouse(path, sample_dir)

    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    echo(f"1/4 generating {users:,} users × {days} days of sample data into {sample_dir} ...")
    summary = generate(sample_dir, users=users, days=days, seed=seed, end=end, progress=True)
    echo(summary.format_text())

    echo(f"\n2/4 ingesting into {path} ...")
    con = warehouse.connect(path)
    try:
        results = [
            ingest_files(con, [sample_dir / "items.csv"], "csv", entity="items"),
            ingest_files(con, [sample_dir / "users.csv"], "csv", entity="users"),
            ingest_files(con, sorted(sample_dir.glob("events-*.jsonl.gz")), "amplitude-export", progress=True),
        ]
        last_event = con.execute("select max(event_time) from raw.events").fetchone()[0]
    except IngestError as exc:
        raise DemoError(f"ingest: {exc}") from None
    finally:
        con.close()
    for result in results:
        echo(result.format_text())
    if last_event is None:
        raise DemoError("ingest loaded no events; nothing to compute")

    as_of = format_as_of(last_event)
    echo(f"\n3/4 running dbt models, tests and syncs as of the last event ({as_of} UTC) ...")
    try:
        run = run_pipeline(as_of, warehouse=path)
    except PipelineError as exc:
        raise DemoError(str(exc)) from None
    echo(run.format_text())

    events = results[2]
    echo(
        "\n4/4 done in {:.0f} s.\n"
        "  events: {:,} loaded, {:,} rejected, {:,} duplicate (rejections with reasons: raw.rejected_events)\n"
        "  warehouse: {}\n"
        "  explore:   select * from marts.cohorts  (any DuckDB client on {})\n"
        "  open the UI: make ui   → http://127.0.0.1:3000 (asset graph, runs, schedules)".format(
            time.perf_counter() - started,
            events.rows_loaded,
            events.rows_rejected,
            events.rows_duplicate,
            path,
            path,
        )
    )
