"""Serving snapshots: what the pipeline publishes and the only thing the API reads.

DuckDB admits one writer process and a reader blocks it (../shared/STACK.md), so the API never opens
the warehouse. After each run the pipeline copies the tables the API serves — profiles (attributes
and computed properties), cohort memberships, the cohort registry, prediction scores and
recommendation lists — into a new SQLite file (point lookups in microseconds, any number of readers),
then points ``CURRENT.json`` at it with an atomic rename. The copy costs what those tables cost, not
what the warehouse holds.

The server checks ``CURRENT.json`` a few times a second and switches to a new snapshot without a
restart; every request reads one snapshot from start to end, so an answer is never half old, half
new. The newest few snapshots are kept, so a reader that opened an older one finishes with it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import duckdb

from cohortflow.serving.errors import ApiError

POINTER = "CURRENT.json"
SNAPSHOTS = "snapshots"
FORMAT_VERSION = 1
_BATCH_ROWS = 50_000
# user_properties columns that are not properties at all.
_NOT_PROPERTIES = {"user_id", "computed_at"}

SCHEMA = """
create table meta (key text primary key, value text not null);
create table users (
    user_id text primary key,
    amp_props text not null,        -- JSON object: the user's attributes (as stg_users reads them)
    computations text not null,     -- JSON object: computed properties
    cohort_ids text not null        -- JSON array, sorted
) without rowid;
create table devices (device_id text primary key, user_id text not null) without rowid;
create table propensities (
    user_id text not null, prediction_id text not null, probability real not null,
    percentile integer not null, model_version text not null, scored_at text not null, as_of text not null,
    primary key (user_id, prediction_id)
) without rowid;
create table predictions (prediction_id text primary key, model_version text, as_of text, users integer) without rowid;
create table recommendations (
    user_id text not null, rec_id text not null, items text not null, is_control integer not null,
    source text, model_version text, last_updated text not null,
    primary key (user_id, rec_id)
) without rowid;
create table recommendation_lists (rec_id text primary key, model_version text, as_of text, users integer) without rowid;
create table cohorts (
    cohort_id text primary key, cohort_name text not null, description text, kind text not null,
    owner text, size integer not null, computed_at text, last_computed_at text, model_name text,
    definition text, syncs text not null
) without rowid;
create table cohort_members (
    cohort_id text not null, user_id text not null, entered_at text,
    primary key (cohort_id, user_id)
) without rowid;
"""

_TIME = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class PublishedSnapshot:
    """What :func:`publish_snapshot` wrote."""

    id: str
    path: Path
    as_of: str
    published_at: str
    rows: Mapping[str, int]
    seconds: float


def attribute_columns(manifest: Mapping[str, Any]) -> list[str]:
    """The user_properties columns that are user attributes (``amp_props``), not computed properties:
    the columns stg_users reads off the users' own properties."""
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") == "model" and node.get("name") == "stg_users":
            return [c for c in node.get("columns", {}) if c not in _NOT_PROPERTIES]
    return []


def syncs_by_cohort(declarations: Iterable[Any]) -> dict[str, list[dict[str, str]]]:
    """Sync metadata per dbt model name (the Cohort API lists each cohort's syncs)."""
    found: dict[str, list[dict[str, str]]] = {}
    for declaration in declarations:
        found.setdefault(declaration.model_name, []).append(
            {
                "name": declaration.name,
                "destination": declaration.destination.name,
                "destination_type": declaration.destination.type,
                "cadence": declaration.schedule,
            }
        )
    return found


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[str]:
    return [
        row[0]
        for row in con.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
            "order by ordinal_position",
            [schema, table],
        ).fetchall()
    ]


def _ts(expression: str) -> str:
    return f"strftime({expression}, '{_TIME}')"


def _copy(con: duckdb.DuckDBPyConnection, target: sqlite3.Connection, table: str, sql: str, width: int) -> int:
    cursor = con.execute(sql)
    insert = f"insert into {table} values ({', '.join('?' * width)})"
    count = 0
    while True:
        rows = cursor.fetchmany(_BATCH_ROWS)
        if not rows:
            return count
        target.executemany(insert, rows)
        count += len(rows)


def publish_snapshot(
    con: duckdb.DuckDBPyConnection,
    serving_dir: Path,
    *,
    attributes: Sequence[str] = (),
    syncs: Mapping[str, list[dict[str, str]]] | None = None,
    run_id: str | None = None,
    keep: int = 3,
) -> PublishedSnapshot:
    """Copy the served tables out of the warehouse into a new snapshot and make it the current one.

    Parameters
    ----------
    con
        A connection to the warehouse (read access is enough) after the run's models are built.
    serving_dir
        Where snapshots and ``CURRENT.json`` live (``<warehouse folder>/serving``).
    attributes
        user_properties columns served as ``amp_props``; every other column is a computed property.
    syncs
        Sync metadata per cohort model name (:func:`syncs_by_cohort`).
    keep
        How many snapshots to keep (the newest); older files are removed.

    Returns
    -------
    PublishedSnapshot
        Its id, file, as_of, publication time and row counts.
    """
    started = time.perf_counter()
    serving_dir = Path(serving_dir)
    folder = serving_dir / SNAPSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    published = datetime.now(timezone.utc).replace(tzinfo=None)
    snapshot_id = f"{published:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}"
    final = folder / f"{snapshot_id}.sqlite"
    temporary = folder / f".tmp-{snapshot_id}.sqlite"
    rows: dict[str, int] = {}

    columns = _columns(con, "marts", "user_properties")
    if not columns:
        raise RuntimeError("marts.user_properties does not exist: run the dbt models before publishing a snapshot")
    attribute_set = [c for c in columns if c in set(attributes)]
    computed = [c for c in columns if c not in _NOT_PROPERTIES and c not in set(attribute_set)]

    def struct(names: Sequence[str]) -> str:
        if not names:
            return "'{}'"
        return "to_json(struct_pack(" + ", ".join(f"{_ident(n)} := u.{_ident(n)}" for n in names) + "))::varchar"

    as_of_row = con.execute(f"select {_ts('max(computed_at)')} from marts.user_properties").fetchone()
    as_of = as_of_row[0] if as_of_row and as_of_row[0] else published.strftime(_TIME)
    has = lambda table: bool(_columns(con, "marts", table))  # noqa: E731

    target = sqlite3.connect(temporary)
    try:
        target.executescript("pragma journal_mode = off; pragma synchronous = off; pragma page_size = 8192;")
        target.executescript(SCHEMA)
        with target:
            rows["users"] = _copy(
                con, target, "users",
                f"""
                select u.user_id, {struct(attribute_set)}, {struct(computed)},
                       coalesce(to_json(m.cohort_ids)::varchar, '[]')
                from marts.user_properties as u
                left join (
                    select user_id, list(cohort_id order by cohort_id) as cohort_ids
                    from marts.cohort_memberships group by user_id
                ) as m using (user_id)
                """,
                4,
            )
            if has("user_devices"):
                rows["devices"] = _copy(con, target, "devices", "select device_id, user_id from marts.user_devices", 2)
            if has("predictions"):
                rows["propensities"] = _copy(
                    con, target, "propensities",
                    f"select user_id, prediction_id, probability, percentile, model_version, {_ts('scored_at')}, "
                    f"{_ts('as_of')} from marts.predictions",
                    7,
                )
                _copy(
                    con, target, "predictions",
                    f"select prediction_id, max(model_version), {_ts('max(as_of)')}, count(*) from marts.predictions "
                    "group by prediction_id",
                    4,
                )
            if has("recommendations"):
                rows["recommendations"] = _copy(
                    con, target, "recommendations",
                    f"select user_id, rec_id, to_json(list(item_id order by rank))::varchar, bool_or(is_control)::int, "
                    f"any_value(source), any_value(model_version), {_ts('max(generated_at)')} "
                    "from marts.recommendations group by user_id, rec_id",
                    7,
                )
                _copy(
                    con, target, "recommendation_lists",
                    f"select rec_id, max(model_version), {_ts('max(as_of)')}, count(distinct user_id) "
                    "from marts.recommendations group by rec_id",
                    4,
                )
            cohort_columns = set(_columns(con, "marts", "cohorts"))
            last_computed = "last_computed_at" if "last_computed_at" in cohort_columns else "computed_at"
            cohorts = con.execute(
                f"select cohort_id, cohort_name, description, kind, owner, size, {_ts('computed_at')}, "
                f"{_ts(last_computed)}, model_name, definition from marts.cohorts"
            ).fetchall()
            target.executemany(
                "insert into cohorts values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*row, json.dumps((syncs or {}).get(row[8], []))) for row in cohorts],
            )
            rows["cohorts"] = len(cohorts)
            rows["cohort_members"] = _copy(
                con, target, "cohort_members",
                f"select cohort_id, user_id, {_ts('entered_at')} from marts.cohort_memberships",
                3,
            )
            meta = {
                "format_version": str(FORMAT_VERSION),
                "snapshot_id": snapshot_id,
                "as_of": as_of,
                "published_at": published.strftime(_TIME),
                "run_id": run_id or "",
            }
            target.executemany("insert into meta values (?, ?)", list(meta.items()))
        target.execute("analyze")
    finally:
        target.close()
    _fsync(temporary)
    os.replace(temporary, final)
    _write_pointer(serving_dir, {"snapshot_id": snapshot_id, "file": f"{SNAPSHOTS}/{final.name}", "as_of": as_of,
                                 "published_at": published.strftime(_TIME)})
    _remove_old(folder, keep)
    return PublishedSnapshot(snapshot_id, final, as_of, published.strftime(_TIME), rows, time.perf_counter() - started)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_pointer(serving_dir: Path, content: Mapping[str, str]) -> None:
    temporary = serving_dir / f".{POINTER}.{uuid.uuid4().hex[:8]}"
    with open(temporary, "w") as handle:
        json.dump(content, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, serving_dir / POINTER)
    _fsync(serving_dir)


def _remove_old(folder: Path, keep: int) -> None:
    published = sorted(folder.glob("*.sqlite"))
    for old in published[:-keep]:
        old.unlink(missing_ok=True)
    cutoff = time.time() - 3600
    for stale in folder.glob(".tmp-*"):  # a publisher killed mid-copy
        if stale.stat().st_mtime < cutoff:
            stale.unlink(missing_ok=True)


# --- reading -------------------------------------------------------------------------------------


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME).replace(tzinfo=timezone.utc)


@dataclass
class Snapshot:
    """One published snapshot, open read-only.

    ``db`` is for the server's event-loop thread; a worker thread opens its own with :meth:`connect`.
    """

    id: str
    path: Path
    as_of: datetime
    published_at: datetime
    db: sqlite3.Connection
    predictions: frozenset[str] = frozenset()
    recommendations: frozenset[str] = frozenset()
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> "Snapshot":
        db = _read_only(path)
        meta = dict(db.execute("select key, value from meta").fetchall())
        snapshot = cls(
            id=meta["snapshot_id"],
            path=path,
            as_of=_parse_time(meta["as_of"]),
            published_at=_parse_time(meta["published_at"]),
            db=db,
            predictions=frozenset(r[0] for r in db.execute("select prediction_id from predictions")),
            recommendations=frozenset(r[0] for r in db.execute("select rec_id from recommendation_lists")),
        )
        snapshot.headers = {
            "X-Cohortflow-Snapshot": snapshot.id,
            "X-Cohortflow-Data-As-Of": snapshot.as_of.strftime(_TIME) + "Z",
            "X-Cohortflow-Published-At": snapshot.published_at.strftime(_TIME) + "Z",
        }
        return snapshot

    def connect(self) -> sqlite3.Connection:
        """A new read-only connection to this snapshot's file (for a worker thread)."""
        return _read_only(self.path)

    def freshness(self) -> dict[str, Any]:
        """How fresh the data is: the moment it was computed as of, and when it was published."""
        now = datetime.now(timezone.utc)
        return {
            "snapshot_id": self.id,
            "data_as_of": self.as_of.strftime(_TIME) + "Z",
            "published_at": self.published_at.strftime(_TIME) + "Z",
            "data_age_seconds": max(0, round((now - self.as_of).total_seconds())),
        }


def _read_only(path: Path) -> sqlite3.Connection:
    # immutable: the file never changes once published, so SQLite takes no locks at all.
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)


class SnapshotStore:
    """The current snapshot, switched when ``CURRENT.json`` changes (checked at most every ``poll`` s)."""

    def __init__(self, serving_dir: Path, poll_seconds: float = 0.25) -> None:
        self.serving_dir = Path(serving_dir)
        self.poll_seconds = poll_seconds
        self._current: Snapshot | None = None
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()

    def current(self) -> Snapshot:
        """The snapshot to answer one request from.

        Raises
        ------
        ApiError
            503 when no snapshot has been published yet.
        """
        if time.monotonic() >= self._next_check:
            self._refresh()
        if self._current is None:
            raise ApiError(503, {"error": "No data has been published yet: run `cohortflow run` (or the Dagster job) first"},
                           {"Retry-After": "60"})
        return self._current

    def _refresh(self) -> None:
        with self._lock:
            self._next_check = time.monotonic() + self.poll_seconds
            try:
                stat = os.stat(self.serving_dir / POINTER)
            except FileNotFoundError:
                return
            signature = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
            if signature == self._signature:
                return
            try:
                pointer = json.loads((self.serving_dir / POINTER).read_text())
                snapshot = Snapshot.open(self.serving_dir / pointer["file"])
            except (OSError, ValueError, KeyError, sqlite3.Error):
                return  # mid-switch or removed: keep serving the current one, look again at the next check
            self._current = snapshot
            self._signature = signature
