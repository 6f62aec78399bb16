"""A warehouse holding the generator's sample data, ingested the way `cohortflow demo` does it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cohortflow.generate import generate
from cohortflow.ingest import ingest_files
from cohortflow.warehouse import connect


def load_generated(warehouse: Path, data_dir: Path, *, users: int, days: int, seed: int, end: datetime) -> datetime:
    """Generate ``users`` × ``days`` ending at ``end`` into ``data_dir``, ingest it; return the last event time."""
    generate(data_dir, users=users, days=days, seed=seed, end=end)
    con = connect(warehouse)
    try:
        ingest_files(con, [data_dir / "items.csv"], "csv", entity="items")
        ingest_files(con, [data_dir / "users.csv"], "csv", entity="users")
        ingest_files(con, sorted(data_dir.glob("events-*.jsonl.gz")), "amplitude-export")
        return con.execute("select max(event_time) from raw.events").fetchone()[0]
    finally:
        con.close()
