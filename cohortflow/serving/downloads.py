"""Cohort downloads, Amplitude's way: request → status → file, built in the background.

A request names a cohort, a format (CSV or JSON) and optionally user properties. The members are read
from ONE serving snapshot — the one current when the request came in (its connection is opened then,
so a snapshot published meanwhile changes nothing, and a snapshot file removed meanwhile stays
readable) — by a worker thread, into ``<exports dir>/cohorts/.tmp-<request_id>.<ext>``, fsynced, then
renamed to ``<request_id>.<ext>``. The job's state is a small JSON file beside it, written the same way,
so every server process (``--workers``) answers for every job, and the file is served only once the
job says COMPLETED, i.e. after the rename: never half written.

A job whose server process died (``pid`` gone) reads as failed; files older than a day are removed.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import orjson

from cohortflow.serving.uploads import REQUEST_ID_PATTERN, write_atomically

log = logging.getLogger("cohortflow.serving")

IN_PROGRESS = "JOB INPROGRESS"
COMPLETED = "JOB COMPLETED"
FAILED = "JOB FAILED"
FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
KEEP_SECONDS = 24 * 3600
FOLDER = "cohorts"
_BATCH = 10_000
_TIME = "%Y-%m-%dT%H:%M:%SZ"


def _now() -> str:
    return datetime.now(timezone.utc).strftime(_TIME)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


@dataclass(frozen=True)
class DownloadRequest:
    """What to build: a cohort's members from one snapshot, with these properties, in this format."""

    cohort_id: str
    cohort_name: str
    format: str
    prop_keys: tuple[str, ...] | None  # None: no properties
    requested_by: str
    snapshot: dict[str, Any]          # the snapshot's freshness when requested (id, data_as_of, published_at)


def property_keys(db: sqlite3.Connection) -> list[str]:
    """The property names a download can ask for: the snapshot's user attributes and computed properties."""
    row = db.execute("select amp_props, computations from users limit 1").fetchone()
    if row is None:
        return []
    return sorted({*orjson.loads(row[0]), *orjson.loads(row[1])})


def write_members(db: sqlite3.Connection, request: DownloadRequest, handle: io.BufferedWriter) -> int:
    """Write the cohort's members (sorted by user id) to ``handle``; return how many."""
    keys = list(request.prop_keys or ())
    cursor = db.execute(
        "select m.user_id, m.entered_at, u.amp_props, u.computations from cohort_members as m "
        "left join users as u on u.user_id = m.user_id where m.cohort_id = ? order by m.user_id",
        (request.cohort_id,),
    )
    rows = 0
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="") if request.format == "csv" else None
    writer = csv.writer(text) if text is not None else None
    if writer is not None:
        writer.writerow(["user_id", "entered_at", *keys])
    else:
        handle.write(b"[")
    while True:
        batch = cursor.fetchmany(_BATCH)
        if not batch:
            break
        for user_id, entered_at, amp_props, computations in batch:
            properties: dict[str, Any] = {}
            if keys:
                known = {**orjson.loads(computations or "{}"), **orjson.loads(amp_props or "{}")}
                properties = {k: known.get(k) for k in keys}
            entered = f"{entered_at}Z" if entered_at else None
            if writer is not None:
                writer.writerow([user_id, entered or "", *(_cell(properties[k]) for k in keys)])
            else:
                record: dict[str, Any] = {"user_id": user_id, "entered_at": entered}
                if request.prop_keys is not None:
                    record["properties"] = properties
                handle.write((b"\n" if rows == 0 else b",\n") + orjson.dumps(record))
            rows += 1
    if text is not None:
        text.flush()
        text.detach()
    else:
        handle.write(b"\n]\n" if rows else b"]\n")
    return rows


class DownloadJobs:
    """The jobs of one server process (state on disk, shared by every process of the server)."""

    def __init__(self, exports_dir: Path, *, workers: int = 1, keep_seconds: float = KEEP_SECONDS) -> None:
        self.folder = Path(exports_dir) / FOLDER
        self.keep_seconds = keep_seconds
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cohort-download")
        self._lock = threading.Lock()

    # --- paths ---
    def _job_path(self, request_id: str) -> Path:
        return self.folder / f"{request_id}.job.json"

    def _file_path(self, request_id: str, fmt: str) -> Path:
        return self.folder / f"{request_id}.{fmt}"

    def _save(self, job: dict[str, Any]) -> None:
        write_atomically(self._job_path(job["request_id"]), orjson.dumps(job))

    # --- API ---
    def submit(self, request: DownloadRequest, db: sqlite3.Connection) -> dict[str, Any]:
        """Record the job and start building it from ``db`` (a connection to the request's snapshot,
        owned by the job from now on)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._remove_old()
        job = {
            "request_id": uuid.uuid4().hex,
            "cohort_id": request.cohort_id,
            "cohort_name": request.cohort_name,
            "format": request.format,
            "props": request.prop_keys is not None,
            "prop_keys": list(request.prop_keys or ()),
            "requested_by": request.requested_by,
            "async_status": IN_PROGRESS,
            "created_at": _now(),
            "completed_at": None,
            "rows": None,
            "error": None,
            "snapshot": request.snapshot,
            "pid": os.getpid(),
        }
        self._save(job)
        try:
            self._executor.submit(self._build, dict(job), request, db)
        except RuntimeError:  # the executor is shut down (the server is stopping)
            db.close()
            job.update(async_status=FAILED, error="the server is stopping; request the file again")
            self._save(job)
        return job

    def status(self, request_id: str, requested_by: str) -> dict[str, Any] | None:
        """The job, or ``None`` when there is no such job for this key."""
        if not REQUEST_ID_PATTERN.match(request_id):
            return None
        try:
            job = orjson.loads(self._job_path(request_id).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if job.get("requested_by") != requested_by:
            return None
        if job["async_status"] == IN_PROGRESS and job.get("pid") != os.getpid() and not _pid_alive(int(job.get("pid") or 0)):
            job.update(async_status=FAILED, error="the server stopped while building the file; request it again")
        return job

    def file(self, job: dict[str, Any]) -> Path | None:
        """The finished file of a COMPLETED job (``None`` when it is gone)."""
        path = self._file_path(job["request_id"], job["format"])
        return path if job["async_status"] == COMPLETED and path.is_file() else None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- work ---
    def _build(self, job: dict[str, Any], request: DownloadRequest, db: sqlite3.Connection) -> None:
        final = self._file_path(job["request_id"], request.format)
        temporary = self.folder / f".tmp-{final.name}"
        started = time.perf_counter()
        try:
            with open(temporary, "wb") as handle:
                rows = write_members(db, request, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            job.update(async_status=COMPLETED, rows=rows, completed_at=_now(), seconds=round(time.perf_counter() - started, 3))
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception("cohort download %s (error %s) failed", job["request_id"], error_id)
            temporary.unlink(missing_ok=True)
            job.update(async_status=FAILED, completed_at=_now(),
                       error=f"the file could not be built; the server log has the details (error id {error_id})")
        finally:
            db.close()
        self._save(job)

    def _remove_old(self) -> None:
        cutoff = time.time() - self.keep_seconds
        with self._lock:
            for path in self.folder.iterdir():
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink(missing_ok=True)
                except OSError:
                    continue


def media_type(fmt: str) -> str:
    return FORMATS[fmt]


def snapshot_headers(snapshot: dict[str, Any]) -> dict[str, str]:
    """The X-Cohortflow-* headers of the snapshot a job was built from."""
    return {
        "X-Cohortflow-Snapshot": str(snapshot.get("snapshot_id", "")),
        "X-Cohortflow-Data-As-Of": str(snapshot.get("data_as_of", "")),
        "X-Cohortflow-Published-At": str(snapshot.get("published_at", "")),
    }


def freshness_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The freshness block of a job's snapshot, its age counted now."""
    try:
        as_of = datetime.strptime(snapshot["data_as_of"], _TIME).replace(tzinfo=timezone.utc)
        age = max(0, round((datetime.now(timezone.utc) - as_of).total_seconds()))
    except (KeyError, ValueError):
        age = 0
    return {**{k: snapshot.get(k) for k in ("snapshot_id", "data_as_of", "published_at")}, "data_age_seconds": age}


__all__: Sequence[str] = (
    "COMPLETED", "FAILED", "FORMATS", "IN_PROGRESS", "DownloadJobs", "DownloadRequest", "freshness_of",
    "media_type", "property_keys", "snapshot_headers", "write_members",
)
