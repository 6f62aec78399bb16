"""Uploaded cohorts: checking a list of ids and landing it as one complete file.

The API never writes the warehouse (one writer, ../shared/STACK.md). An accepted upload or membership
change becomes one JSON file under ``<warehouse folder>/landing/cohorts/``, written to a hidden
temporary name, fsynced and renamed into place: the file is there whole or not at all, so a change
is never half applied. The next pipeline run copies the files into ``raw.uploaded_cohort_changes`` /
``raw.uploaded_cohort_change_ids`` (:mod:`cohortflow.ingest.uploaded_cohorts`) and dbt folds the
changes, in the order they were accepted, into the cohort's members.

A landed file (``<sequence>-<request_id>.json``, ``sequence`` = received_at in nanoseconds)::

    {"format": "cohortflow.uploaded_cohort_changes.v1", "request_id": "…", "cohort_id": "vip_list_3fa1c2",
     "received_at": "2026-12-05T11:22:33.123456Z", "sequence": 1796469753123456789, "requested_by": "crm",
     "cohort": {"name": "VIP list", "description": null, "owner": "crm", "id_type": "BY_USER_ID"},
     "changes": [{"operation": "create", "ids": ["u1", "u2"]}]}

``cohort`` is present for ``create`` / ``replace``; ``changes`` holds one or more operations in the
order they apply (a membership request may add some ids and remove others). Plain Python: no FastAPI.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import time
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FORMAT = "cohortflow.uploaded_cohort_changes.v1"
COHORTS_FOLDER = "cohorts"          # under settings.landing_dir
REGISTRY_FOLDER = "registry"        # landing/cohorts/registry/<cohort_id>.json: uploaded, maybe not ingested yet
INGESTED_FOLDER = "ingested"        # where ingest moves a file once its rows are in the warehouse
REJECTED_FOLDER = "rejected"        # a file ingest could not read (never written by the API)
OPERATIONS = ("create", "replace", "add", "remove")
ID_TYPES = ("BY_USER_ID", "BY_AMP_ID")
SUPPORTED_ID_TYPES = ("BY_USER_ID",)
MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 200
MAX_TEXT_LENGTH = 2000
INVALID_SAMPLE_SIZE = 10
# Operations in one membership request (each becomes a change, numbered with four digits in change_id).
MAX_CHANGES_PER_REQUEST = 100
# Cohort ids are written into SQL (in_uploaded_cohort('…')), file names and URLs: one safe spelling.
COHORT_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
REQUEST_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


# --- checking ids --------------------------------------------------------------------------------


def id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a user id, or ``None`` when it can."""
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})" if value is not None else "null"
    if not value.strip():
        return "empty"
    if len(value) > MAX_ID_LENGTH:
        return f"longer than {MAX_ID_LENGTH} characters"
    if _CONTROL.search(value):
        return "contains a control character"
    if value != value.strip():
        return "leading or trailing whitespace"
    if not _is_utf8(value):
        return "not valid Unicode text"
    return None


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800")
        return False
    return True


_MULTILINE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why ``value`` cannot be a cohort's name / owner (``multiline``: description), or ``None``."""
    if not value.strip():
        return "must not be blank"
    if (_MULTILINE_CONTROL if multiline else _CONTROL).search(value):
        return "must not contain control characters"
    if not _is_utf8(value):
        return "must be valid Unicode text"
    return None


@dataclass
class CheckedIds:
    """A list of ids after checking: the distinct valid ones (first-seen order) and what was dropped."""

    valid: list[str]
    received: int
    invalid: int = 0
    duplicates: int = 0
    invalid_sample: list[dict[str, str]] = field(default_factory=list)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= 80 else text[:77] + "..."


def check_ids(ids: Iterable[Any], *, sample_size: int = INVALID_SAMPLE_SIZE) -> CheckedIds:
    """Keep each valid id once; count (and sample) the invalid ones and the repeats."""
    seen: dict[str, None] = {}
    checked = CheckedIds(valid=[], received=0)
    for value in ids:
        checked.received += 1
        problem = id_problem(value)
        if problem is not None:
            checked.invalid += 1
            if len(checked.invalid_sample) < sample_size:
                checked.invalid_sample.append({"id": _shown(value), "reason": problem})
            continue
        if value in seen:
            checked.duplicates += 1
            continue
        seen[value] = None
    checked.valid = list(seen)
    return checked


def count_known(db: sqlite3.Connection, ids: Sequence[str], *, batch: int = 5_000) -> int:
    """How many of ``ids`` are users of the serving snapshot (``users`` table)."""
    known = 0
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        placeholders = ",".join("?" * len(chunk))
        known += db.execute(f"select count(*) from users where user_id in ({placeholders})", chunk).fetchone()[0]
    return known


# --- cohort ids ----------------------------------------------------------------------------------


def new_cohort_id(name: str, taken: Iterable[str] = ()) -> str:
    """A new, never-reused id readable in code: the name's slug and six random hex digits
    (``VIP list`` -> ``vip_list_3fa1c2``)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name).strip("_")[:40].strip("_")
    if not slug or not slug[0].isalpha():
        slug = "uploaded" + (f"_{slug}" if slug else "")
    taken = set(taken)
    while True:
        candidate = f"{slug}_{secrets.token_hex(3)}"
        if candidate not in taken and COHORT_ID_PATTERN.match(candidate):
            return candidate


# --- landing -------------------------------------------------------------------------------------


def cohorts_folder(landing_dir: Path) -> Path:
    return Path(landing_dir) / COHORTS_FOLDER


@dataclass(frozen=True)
class LandedChange:
    """What one accepted request landed."""

    request_id: str
    cohort_id: str
    received_at: datetime
    path: Path


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file beside ``path``, fsync it, rename it onto ``path``.

    Readers (ingest, the API) ignore names starting with ``.``, so they see the whole file or none.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".tmp-{uuid.uuid4().hex}-{path.name}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def land_change(
    landing_dir: Path,
    *,
    cohort_id: str,
    changes: Sequence[tuple[str, Sequence[str]]],
    requested_by: str,
    cohort: dict[str, Any] | None = None,
) -> LandedChange:
    """Land one request's changes (``[(operation, ids), ...]``, in the order they apply) as one file.

    A ``create`` also records the cohort in the registry folder, so that members can be added before
    the next pipeline run has ingested it.
    """
    if not 1 <= len(changes) <= MAX_CHANGES_PER_REQUEST:
        raise ValueError(f"a request lands 1 to {MAX_CHANGES_PER_REQUEST} changes, got {len(changes)}")
    for operation, _ in changes:
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
    if not COHORT_ID_PATTERN.match(cohort_id):
        raise ValueError(f"cohort id {cohort_id!r} is not a plain lower-case identifier")
    sequence = time.time_ns()
    received = _from_ns(sequence)
    request_id = uuid.uuid4().hex
    document: dict[str, Any] = {
        "format": FORMAT,
        "request_id": request_id,
        "cohort_id": cohort_id,
        "received_at": received.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "sequence": sequence,
        "requested_by": requested_by,
        "changes": [{"operation": operation, "ids": list(ids)} for operation, ids in changes],
    }
    if cohort is not None:
        document["cohort"] = cohort
    folder = cohorts_folder(landing_dir)
    path = folder / f"{sequence:020d}-{request_id}.json"
    write_atomically(path, json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if any(operation == "create" for operation, _ in changes):
        marker = {"cohort_id": cohort_id, "name": (cohort or {}).get("name"), "created_at": document["received_at"],
                  "requested_by": requested_by, "request_id": request_id}
        write_atomically(folder / REGISTRY_FOLDER / f"{cohort_id}.json", json.dumps(marker).encode("utf-8"))
    return LandedChange(request_id, cohort_id, received, path)


def _from_ns(nanoseconds: int) -> datetime:
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=rest // 1_000)


def is_registered_upload(landing_dir: Path, cohort_id: str) -> bool:
    """Whether ``cohort_id`` was created by an upload (its registry marker exists), ingested or not."""
    if not COHORT_ID_PATTERN.match(cohort_id):
        return False
    return (cohorts_folder(landing_dir) / REGISTRY_FOLDER / f"{cohort_id}.json").is_file()


def landed_files(landing_dir: Path) -> list[Path]:
    """Landed change files not ingested yet, in the order the API accepted them."""
    folder = cohorts_folder(landing_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith(".") and p.is_file())


class LandedFileError(ValueError):
    """A file in the landing folder that is not a change file this version can read."""


def read_landed_file(path: Path) -> dict[str, Any]:
    """A landed change file, checked: the fields ingest relies on have the right types.

    Raises
    ------
    LandedFileError
        Naming what is wrong.
    """
    try:
        document = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise LandedFileError(f"not readable JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise LandedFileError(f"not a {FORMAT} file")
    for key, kind in (("request_id", str), ("cohort_id", str), ("received_at", str), ("sequence", int),
                      ("requested_by", str), ("changes", list)):
        if not isinstance(document.get(key), kind):
            raise LandedFileError(f"{key}: expected {kind.__name__}")
    if not REQUEST_ID_PATTERN.match(document["request_id"]) or not COHORT_ID_PATTERN.match(document["cohort_id"]):
        raise LandedFileError("request_id or cohort_id has an unexpected spelling")
    if not 1 <= len(document["changes"]) <= MAX_CHANGES_PER_REQUEST:
        raise LandedFileError(f"changes: expected 1 to {MAX_CHANGES_PER_REQUEST} changes")
    for position, change in enumerate(document["changes"]):
        if not isinstance(change, dict) or change.get("operation") not in OPERATIONS or not isinstance(change.get("ids"), list):
            raise LandedFileError(f"changes[{position}]: expected {{operation: {'|'.join(OPERATIONS)}, ids: [...]}}")
        if any(id_problem(value) is not None for value in change["ids"]):
            raise LandedFileError(f"changes[{position}].ids: holds an invalid id")
        if change["operation"] in ("create", "replace") and not isinstance(document.get("cohort"), dict):
            raise LandedFileError(f"changes[{position}]: a {change['operation']} needs the cohort's name")
    return document
