"""Copy the cohort uploads and membership changes the API landed into the raw tables.

Runs at the start of every pipeline run (the Dagster asset ``uploaded_cohorts``, upstream of dbt),
before dbt folds the changes into members (``int_uploaded_cohort_members``). The API wrote each
accepted request as one complete file under ``<warehouse folder>/landing/cohorts/``
(:mod:`cohortflow.serving.uploads`); here every such file becomes rows of
``raw.uploaded_cohort_changes`` (one per change) and ``raw.uploaded_cohort_change_ids`` (one per id),
all files of a run in one transaction, then the files move to ``ingested/``. A file whose request is
already in the warehouse (a run that stopped between the commit and the move) is not loaded twice.
A file that cannot be read (not written by the API) moves to ``rejected/`` and is reported.

No uploads: nothing to do, nothing fails.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from cohortflow.serving.uploads import (
    INGESTED_FOLDER,
    REJECTED_FOLDER,
    LandedFileError,
    landed_files,
    read_landed_file,
)
from cohortflow.warehouse import RAW_SCHEMA, ensure_raw_tables

log = logging.getLogger(__name__)

CHANGES_TABLE = f"{RAW_SCHEMA}.uploaded_cohort_changes"
IDS_TABLE = f"{RAW_SCHEMA}.uploaded_cohort_change_ids"


@dataclass
class UploadIngestSummary:
    """What one ingest of the landing folder did."""

    files: int = 0
    changes: int = 0
    ids: int = 0
    already_ingested: int = 0
    cohorts: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # file name -> why

    def format_text(self) -> str:
        if not (self.files or self.already_ingested or self.rejected):
            return "no landed cohort uploads"
        text = f"{self.files} landed file(s): {self.changes} change(s), {self.ids:,} id(s) for {len(self.cohorts)} cohort(s)"
        if self.already_ingested:
            text += f"; {self.already_ingested} already in the warehouse"
        if self.rejected:
            text += f"; {len(self.rejected)} unreadable, moved to {REJECTED_FOLDER}/"
        return text


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).replace(tzinfo=None)


def _move(path: Path, folder: str) -> None:
    target = path.parent / folder
    target.mkdir(exist_ok=True)
    os.replace(path, target / path.name)


def ingest_uploaded_cohorts(
    con: duckdb.DuckDBPyConnection, landing_dir: Path, *, now: datetime | None = None
) -> UploadIngestSummary:
    """Load every landed change file of ``landing_dir/cohorts`` into the raw tables, then archive it.

    Parameters
    ----------
    con
        A write connection to the warehouse.
    landing_dir
        The API's landing folder (``<warehouse folder>/landing``).
    now
        The ``ingested_at`` stamp (default: now, UTC).
    """
    ensure_raw_tables(con)
    summary = UploadIngestSummary()
    paths = landed_files(landing_dir)
    if not paths:
        return summary
    clock = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)
    known = {r[0] for r in con.execute(f"select distinct request_id from {CHANGES_TABLE}").fetchall()}

    change_rows: list[tuple] = []
    id_change: list[str] = []
    id_user: list[str] = []
    loaded: list[Path] = []
    duplicates: list[Path] = []
    cohorts: set[str] = set()
    for path in paths:
        try:
            document = read_landed_file(path)
            received_at = _parse_time(document["received_at"])
        except (LandedFileError, ValueError) as exc:
            summary.rejected[path.name] = str(exc)
            log.warning("landed cohort file %s cannot be read (%s): moved to %s/", path.name, exc, REJECTED_FOLDER)
            _move(path, REJECTED_FOLDER)
            continue
        if document["request_id"] in known:
            duplicates.append(path)
            continue
        known.add(document["request_id"])
        cohort = document.get("cohort") or {}
        for position, change in enumerate(document["changes"]):
            # Zero-padded: changes of one request apply in change_id order.
            change_id = f"{document['request_id']}:{position:04d}"
            operation = change["operation"]
            described = operation in ("create", "replace")
            change_rows.append((
                change_id, document["request_id"], document["cohort_id"], operation,
                cohort.get("name") if described else None,
                cohort.get("description") if described else None,
                cohort.get("owner") if described else None,
                cohort.get("id_type") or "BY_USER_ID",
                len(change["ids"]), received_at, document["sequence"], document["requested_by"],
                str(path.parent / INGESTED_FOLDER / path.name), clock,
            ))
            id_change.extend([change_id] * len(change["ids"]))
            id_user.extend(change["ids"])
        cohorts.add(document["cohort_id"])
        loaded.append(path)

    if change_rows:
        ids = pa.table({"change_id": pa.array(id_change, pa.string()), "user_id": pa.array(id_user, pa.string())})
        con.begin()
        try:
            con.executemany(f"insert into {CHANGES_TABLE} values ({', '.join('?' * 14)})", change_rows)
            con.register("uploaded_cohort_ids_batch", ids)
            con.execute(f"insert into {IDS_TABLE} (change_id, user_id) select change_id, user_id from uploaded_cohort_ids_batch")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            con.unregister("uploaded_cohort_ids_batch")
    # Only after the commit: a run stopped before this line finds the files again and skips them
    # by request_id.
    for path in (*loaded, *duplicates):
        _move(path, INGESTED_FOLDER)
    summary.files = len(loaded)
    summary.changes = len(change_rows)
    summary.ids = len(id_user)
    summary.already_ingested = len(duplicates)
    summary.cohorts = sorted(cohorts)
    return summary


def landing_dir_for(warehouse: Path) -> Path:
    """The API's landing folder for a warehouse file (``<its folder>/landing``)."""
    from cohortflow.serving.settings import serving_paths

    return serving_paths(warehouse)[2]


__all__ = ["UploadIngestSummary", "ingest_uploaded_cohorts", "landing_dir_for"]
