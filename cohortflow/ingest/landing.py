"""Events the API accepted, landed as files, and their ingest by the next pipeline run.

The event endpoint (``POST /2/httpapi``, :mod:`cohortflow.serving.events`) never opens the warehouse:
DuckDB admits one writer process, and that is the pipeline. It lands every accepted request as one
file under ``<landing dir>/events/`` and answers 200 only once that file is durable (:func:`write_landed`:
a temp file, flushed and fsynced, renamed into place, the folder fsynced). A landed file is JSON lines
in the shape ``cohortflow ingest --format amplitude`` reads: a header line ``{"events": [], ...}`` (a
request body without events: it makes every file unique and ingests as nothing), then one event a line.

:func:`ingest_landed` moves what is landed into the raw tables with the ordinary ingest
(:func:`~cohortflow.ingest.loader.ingest_files`), many requests at a time:

1. *claim*: landed files are renamed, one by one, into a new batch folder ``batches/<batch id>/``
   (a rename is atomic: a file is either still landed or in exactly one batch);
2. *ingest*: the batch's files are concatenated, in arrival order, into ``ingested/<batch id>.jsonl``
   and that file is ingested in one transaction (``raw.ingested_files`` records it in the same one);
3. *clean up*: the batch folder is deleted.

A crash anywhere is repaired by the next call: a batch folder left behind is finished first. If its
archive is already recorded in ``raw.ingested_files`` the transaction committed and only the clean-up
is left; otherwise its (complete) folder is concatenated again and ingested. So every event is
ingested once, with or without an ``insert_id``; an ``insert_id`` seen before (in this batch or any
earlier file) is a duplicate as in every ingest. Temp files (``.tmp-*``) are never read: a half-written
file is never ingested, and one older than :data:`STALE_TEMP_SECONDS` (its writer died) is removed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb
import orjson

from cohortflow.warehouse import RAW_SCHEMA, ensure_raw_tables, warehouse_path

#: Where accepted requests land, under the landing folder.
EVENTS_FOLDER: Final[str] = "events"
#: Batches being ingested (a folder of claimed request files each), under ``events/``.
BATCHES_FOLDER: Final[str] = "batches"
#: Ingested batches (one JSON-lines file each: the provenance of raw.events.source_file), under ``events/``.
INGESTED_FOLDER: Final[str] = "ingested"
#: Files being written start with this; nothing reads them.
TEMP_PREFIX: Final[str] = ".tmp-"
LANDED_SUFFIX: Final[str] = ".jsonl"
#: A temp file older than this lost its writer (killed mid-write): it is removed.
STALE_TEMP_SECONDS: Final[float] = 15 * 60
#: Landed bytes ingested in one transaction (a larger backlog is ingested in several).
DEFAULT_BATCH_BYTES: Final[int] = 256 * 1024 * 1024
#: Ingested batch files are kept this long (Amplitude's insert_id window), then removed; their
#: events stay in raw.events and are deduplicated against for ever.
DEFAULT_KEEP_INGESTED_SECONDS: Final[float] = 7 * 24 * 3600


def landing_dir_for(warehouse: str | os.PathLike[str] | None = None) -> Path:
    """The landing folder of a warehouse: ``landing/`` beside the DuckDB file (as the API's settings)."""
    return warehouse_path(warehouse).parent / "landing"


def events_dir(landing_dir: str | os.PathLike[str]) -> Path:
    """``<landing dir>/events``: where the event endpoint lands requests."""
    return Path(landing_dir) / EVENTS_FOLDER


def new_landed_name(now_ns: int | None = None) -> str:
    """A unique file name that sorts in arrival order: ``20260301T120000123456Z-<random>.jsonl``."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    moment = datetime.fromtimestamp(now_ns // 1_000_000_000, UTC)
    micros = (now_ns // 1000) % 1_000_000
    return f"{moment:%Y%m%dT%H%M%S}{micros:06d}Z-{uuid.uuid4().hex[:16]}{LANDED_SUFFIX}"


def _is_landed(name: str) -> bool:
    return name.endswith(LANDED_SUFFIX) and not name.startswith(".")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) durably: each new folder's parent is fsynced."""
    if path.is_dir():
        return
    _ensure_dir(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _write_durably(target: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``target`` all or nothing: temp file, fsync, rename, fsync the folder."""
    temp = target.with_name(f"{TEMP_PREFIX}{target.name}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(temp, target)
    _fsync_dir(target.parent)


def write_landed(landing_dir: str | os.PathLike[str], lines: Sequence[bytes], header: dict[str, Any],
                 *, name: str | None = None) -> Path:
    """Land one accepted request durably; return its path. When this returns, the file survives a crash.

    Parameters
    ----------
    landing_dir : path
        The landing folder; the file goes to ``<landing_dir>/events/``.
    lines : sequence of bytes
        One serialised event each (JSON objects, no newline).
    header : dict
        What to record about the request (id, time, key name...); written as the first line inside
        ``{"events": [], "cohortflow_request": header}``, which ingests as nothing.
    name : str or None
        The file name (default :func:`new_landed_name`).

    Returns
    -------
    Path
        The landed file.
    """
    folder = events_dir(landing_dir)
    _ensure_dir(folder)
    target = folder / (name or new_landed_name())
    head = orjson.dumps({"events": [], "cohortflow_request": header})
    _write_durably(target, (head, b"\n", b"\n".join(lines), b"\n"))
    return target


def has_landed(landing_dir: str | os.PathLike[str]) -> bool:
    """True when something waits to be ingested: a landed file, or a batch a crash left unfinished."""
    folder = events_dir(landing_dir)
    for sub, wanted in ((folder, _is_landed), (folder / BATCHES_FOLDER, lambda name: not name.startswith("."))):
        try:
            with os.scandir(sub) as entries:
                if any(wanted(entry.name) for entry in entries):
                    return True
        except FileNotFoundError:
            continue
    return False


@dataclass
class LandedBatch:
    """One batch: the request files it took and what their ingest did."""

    batch_id: str
    requests: int
    path: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    users_loaded: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    #: True when a crash had left this batch behind (claimed, or ingested but not cleaned up).
    recovered: bool = False
    #: True when the recovered batch had committed already: only its clean-up was left.
    already_ingested: bool = False


@dataclass
class LandedIngest:
    """What :func:`ingest_landed` did."""

    landing_dir: str
    batches: list[LandedBatch] = field(default_factory=list)
    stale_temp_files_removed: int = 0
    ingested_files_pruned: int = 0
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        """Landed request files ingested (recovered batches included)."""
        return sum(b.requests for b in self.batches)

    def _total(self, name: str) -> int:
        return sum(getattr(b, name) for b in self.batches)

    @property
    def rows_read(self) -> int:
        return self._total("rows_read")

    @property
    def rows_loaded(self) -> int:
        return self._total("rows_loaded")

    @property
    def rows_duplicate(self) -> int:
        return self._total("rows_duplicate")

    @property
    def rows_rejected(self) -> int:
        return self._total("rows_rejected")

    @property
    def users_loaded(self) -> int:
        """Rows written to raw.users ($identify events), part of rows_loaded."""
        return self._total("users_loaded")

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for batch in self.batches:
            total.update(batch.rejected_by_reason)
        return dict(total.most_common())

    def format_text(self) -> str:
        """One or two lines for the CLI and the run log."""
        if not self.batches:
            return f"landed events: nothing to ingest in {self.landing_dir}"
        recovered = sum(b.recovered for b in self.batches)
        line = (f"landed events: {self.requests:,} request file(s) in {len(self.batches)} batch(es): "
                f"{self.rows_read:,} read, {self.rows_loaded:,} loaded, {self.rows_duplicate:,} duplicate, "
                f"{self.rows_rejected:,} rejected"
                + (f" (+ {self.users_loaded:,} users)" if self.users_loaded else "")
                + f" in {self.seconds:.1f} s"
                + (f" ({recovered} batch(es) a crash had left unfinished)" if recovered else ""))
        if self.rejected_by_reason:
            reasons = ", ".join(f"{reason} {n:,}" for reason, n in self.rejected_by_reason.items())
            line += f"\n  rejected: {reasons} (details: table raw.rejected_events)"
        return line

    def as_metadata(self) -> dict[str, Any]:
        """Plain numbers and text for the Dagster materialisation."""
        return {
            "landing_dir": self.landing_dir,
            "requests_ingested": self.requests,
            "batches": len(self.batches),
            "recovered_batches": sum(b.recovered for b in self.batches),
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_duplicate": self.rows_duplicate,
            "rows_rejected": self.rows_rejected,
            "users_loaded": self.users_loaded,
            "rejected_by_reason": self.rejected_by_reason,
            "seconds": round(self.seconds, 3),
        }


def ingest_landed(
    target: duckdb.DuckDBPyConnection | str | os.PathLike[str] | None,
    landing_dir: str | os.PathLike[str] | None = None,
    *,
    now: datetime | None = None,
    tracking_plan: str | os.PathLike[str] | None = None,
    max_batch_bytes: int = DEFAULT_BATCH_BYTES,
    keep_ingested_seconds: float = DEFAULT_KEEP_INGESTED_SECONDS,
) -> LandedIngest:
    """Ingest every complete landed request file into the raw tables, each event once.

    Parameters
    ----------
    target : connection, path or None
        A writable warehouse connection (not inside a transaction), or the warehouse file to open
        (None: ``$COHORTFLOW_WAREHOUSE`` or the default); an opened file is closed again.
    landing_dir : path or None
        The landing folder; default: ``landing/`` beside the warehouse file.
    now : datetime or None
        The ingest clock (default: now), as for :func:`~cohortflow.ingest.loader.ingest_files`.
    tracking_plan : path or None
        As for ``ingest_files`` (default: the project's tracking plan).
    max_batch_bytes : int
        Landed bytes per batch (one transaction each); at least one request file per batch.
    keep_ingested_seconds : float
        Ingested batch files older than this are removed from ``ingested/``.

    Returns
    -------
    LandedIngest
        One :class:`LandedBatch` per batch ingested (or finished after a crash).

    Raises
    ------
    IngestError
        When a batch cannot be ingested at all (its files stay, and are retried by the next call).
    """
    started = time.perf_counter()
    if isinstance(target, duckdb.DuckDBPyConnection):
        con, own = target, False
    else:
        from cohortflow.warehouse import connect

        con, own = connect(target), True
    try:
        if landing_dir is None:
            landing_dir = _landing_dir_of(con)
        folder = events_dir(landing_dir)
        result = LandedIngest(landing_dir=str(landing_dir))
        if not folder.is_dir():
            return result
        ensure_raw_tables(con)
        batches, archive = folder / BATCHES_FOLDER, folder / INGESTED_FOLDER
        result.stale_temp_files_removed = _remove_stale_temps(folder) + _remove_stale_temps(archive)
        # A crash left these: finish them first, each exactly as it was claimed.
        for leftover in sorted(p for p in _listdir(batches) if not p.name.startswith(".") and p.is_dir()):
            batch = _finish_batch(con, leftover, archive, now, tracking_plan)
            if batch is not None:
                batch.recovered = True
                result.batches.append(batch)
        # Only what is landed now: requests arriving meanwhile wait for the next call.
        landed = sorted(p for p in _listdir(folder) if _is_landed(p.name) and p.is_file())
        for group in _groups(landed, max_batch_bytes):
            claimed = _claim(group, batches)
            if claimed is not None:
                batch = _finish_batch(con, claimed, archive, now, tracking_plan)
                if batch is not None:
                    result.batches.append(batch)
        result.ingested_files_pruned = _prune(archive, keep_ingested_seconds)
        result.seconds = time.perf_counter() - started
        return result
    finally:
        if own:
            con.close()


def _landing_dir_of(con: duckdb.DuckDBPyConnection) -> Path:
    row = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchone()
    if not row or not row[0]:
        raise ValueError("ingest_landed: an in-memory warehouse has no landing folder beside it; pass landing_dir")
    return landing_dir_for(row[0])


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


def _remove_stale_temps(folder: Path) -> int:
    removed = 0
    limit = time.time() - STALE_TEMP_SECONDS
    for path in _listdir(folder):
        if path.name.startswith(TEMP_PREFIX):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
    return removed


def _groups(files: list[Path], max_bytes: int) -> Iterable[list[Path]]:
    group: list[Path] = []
    size = 0
    for path in files:
        try:
            n = path.stat().st_size
        except FileNotFoundError:
            continue
        if group and size + n > max_bytes:
            yield group
            group, size = [], 0
        group.append(path)
        size += n
    if group:
        yield group


def _claim(files: list[Path], batches: Path) -> Path | None:
    """Rename ``files`` into a new batch folder; return it (None when none could be claimed)."""
    _ensure_dir(batches)
    folder = batches / new_landed_name().removesuffix(LANDED_SUFFIX)
    folder.mkdir()
    _fsync_dir(batches)
    claimed = 0
    for path in files:
        try:
            os.rename(path, folder / path.name)
            claimed += 1
        except FileNotFoundError:  # gone meanwhile: nothing to claim
            continue
    _fsync_dir(folder)
    if files:
        _fsync_dir(files[0].parent)
    if not claimed:
        folder.rmdir()
        return None
    return folder


def _already_ingested(con: duckdb.DuckDBPyConnection, archive_file: Path) -> bool:
    # By name, not by content: a batch id is never reused, and the folder may have been moved.
    suffix = f"/{archive_file.parent.name}/{archive_file.name}"
    row = con.execute(f"select count(*) from {RAW_SCHEMA}.ingested_files where ends_with(source_file, ?)",
                      [suffix]).fetchone()
    return bool(row and row[0])


def _finish_batch(con: duckdb.DuckDBPyConnection, folder: Path, archive: Path, now: datetime | None,
                  tracking_plan: str | os.PathLike[str] | None) -> LandedBatch | None:
    from cohortflow.ingest.loader import ingest_files

    batch_id = folder.name
    archive_file = archive / f"{batch_id}{LANDED_SUFFIX}"
    files = sorted(p for p in _listdir(folder) if _is_landed(p.name))
    batch = LandedBatch(batch_id=batch_id, requests=len(files), path=str(archive_file))
    if _already_ingested(con, archive_file):
        # Committed before a crash: only the clean-up is left (the folder may be partly removed).
        batch.already_ingested = True
        _remove_batch_folder(folder)
        return batch
    if not files:
        _remove_batch_folder(folder)
        return None
    _ensure_dir(archive)
    _write_durably(archive_file, _concatenated(batch_id, files))
    summary = ingest_files(con, [archive_file], "amplitude", now=now, tracking_plan=tracking_plan)
    ingested = summary.files[0]
    batch.rows_read, batch.rows_loaded = ingested.rows_read, ingested.rows_loaded
    batch.rows_duplicate, batch.rows_rejected = ingested.rows_duplicate, ingested.rows_rejected
    batch.users_loaded = ingested.users_loaded
    batch.rejected_by_reason = dict(ingested.rejected_by_reason)
    _remove_batch_folder(folder)
    return batch


def _concatenated(batch_id: str, files: list[Path]) -> Iterable[bytes]:
    """The batch file: a header naming the batch (so no two batches have the same bytes), then each file."""
    yield orjson.dumps({"events": [], "cohortflow_batch": {"id": batch_id, "requests": len(files)}}) + b"\n"
    for path in files:
        data = path.read_bytes()
        yield data
        if data and not data.endswith(b"\n"):
            yield b"\n"


def _remove_batch_folder(folder: Path) -> None:
    for path in _listdir(folder):
        path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    _fsync_dir(folder.parent)


def _prune(archive: Path, keep_seconds: float) -> int:
    removed = 0
    limit = time.time() - keep_seconds
    for path in _listdir(archive):
        if _is_landed(path.name):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
    return removed
