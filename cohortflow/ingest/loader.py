"""``ingest_files``: land files in the raw tables, one transaction per file."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from cohortflow.ingest.mapping import ENTITIES, CsvMapping
from cohortflow.ingest.reasons import DEFAULT_MAX_FIELD_BYTES
from cohortflow.ingest.sources import DEFAULT_BLOCK_BYTES, sha256_of, temp_prefix
from cohortflow.ingest.stage import Counts, FileContext
from cohortflow.ingest.summary import FileResult, IngestError, IngestSummary
from cohortflow.ingest.untracked import create_plan_table, write_untracked
from cohortflow.tracking_plan import DEFAULT_PLAN_FILE, TrackingPlan, TrackingPlanError, load_tracking_plan
from cohortflow.warehouse import RAW_SCHEMA, ensure_raw_tables

FORMATS: tuple[str, ...] = ("amplitude", "amplitude-export", "csv", "online-retail")

#: Entities each format can produce (Amplitude and Online Retail decide per record).
_FORMAT_ENTITIES: dict[str, tuple[str, ...]] = {
    "amplitude": ("events",),
    "amplitude-export": ("events",),
    "csv": ENTITIES,
    "online-retail": ("events",),
}


def ingest_files(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[str | Path],
    fmt: str,
    *,
    entity: str = "events",
    mapping: CsvMapping | None = None,
    now: datetime | None = None,
    progress: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
    tracking_plan: str | Path | None = None,
) -> IngestSummary:
    """Load source files into the raw tables of the warehouse.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Writable warehouse connection (not inside a transaction: each file gets its own).
    paths : Sequence[str | Path]
        Files to load, in order. All must exist before anything is loaded.
    fmt : str
        One of :data:`FORMATS`.
    entity : str
        ``events``, ``users`` or ``items`` (only ``csv`` loads users / items from rows;
        Amplitude ``$identify`` and Online Retail customers land in ``raw.users`` anyway).
        A mapping's own ``entity`` wins over the default ``events``.
    mapping : CsvMapping or None
        Column mapping for ``csv``; ``None`` maps same-named columns.
    now : datetime or None
        The ingest clock (UTC; naive or aware) for ``ingested_at`` and the far-future rule.
        Default: the current UTC time.
    progress : bool
        Show a progress bar on stderr.
    block_bytes : int
        Decompressed bytes processed per block (memory bound).
    max_field_bytes : int
        Size limit of one value in UTF-8 bytes: a CSV cell, a JSON line, an event of a one-document
        JSON file. A row holding a larger one is rejected ``field_too_large`` (its stored payload cut,
        saying so); the rest of the file loads. Default 1 MiB.
    tracking_plan : str, Path or None
        The tracking plan file (a dbt properties file, see :mod:`cohortflow.tracking_plan`) that loaded
        events are counted against; default: the project's ``dbt_project/models/staging/tracking_plan.yml``.
        Events of unknown types and properties unknown for their type still load; they are counted
        in the summary and in ``raw.untracked_events``. When there is no file there, the summary says
        so once and nothing is counted.

    Returns
    -------
    IngestSummary
        One :class:`FileResult` per path.

    Raises
    ------
    IngestError
        Unknown format / entity, a missing path, a mapping that does not fit, a tracking plan file
        that cannot be used (naming its key), or a file that cannot be read at all. Files before the failing one stay committed; the failing file
        leaves nothing behind. Bad rows never raise: they go to ``raw.rejected_events``.
    """
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if isinstance(max_field_bytes, bool) or not isinstance(max_field_bytes, int) or max_field_bytes < 1:
        raise IngestError(f"max_field_bytes must be a positive number of bytes, not {max_field_bytes!r}")
    if entity not in ENTITIES:
        raise IngestError(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}")
    if mapping is not None and fmt != "csv":
        raise IngestError(f"a column mapping only applies to --format csv, not {fmt}")
    if mapping is not None and mapping.entity is not None:
        if entity not in ("events", mapping.entity):
            raise IngestError(f"entity {entity!r} conflicts with the mapping's entity {mapping.entity!r}")
        entity = mapping.entity
    if entity not in _FORMAT_ENTITIES[fmt]:
        raise IngestError(f"format {fmt} loads events (and users / items it finds itself), not --entity {entity}")
    files = [Path(p) for p in paths]
    for p in files:
        if not p.exists():
            raise IngestError(f"{p}: no such file")
        if not p.is_file():
            raise IngestError(f"{p}: not a file")
    clock = _utc_naive(now or datetime.now(UTC))
    plan_path = Path(tracking_plan) if tracking_plan is not None else DEFAULT_PLAN_FILE
    plan: TrackingPlan | None = None
    summary = IngestSummary(format=fmt, entity=entity)
    if entity == "events":
        if plan_path.exists():
            try:
                plan = load_tracking_plan(plan_path)
            except TrackingPlanError as exc:
                raise IngestError(str(exc)) from None
            summary.tracking_plan = str(plan_path)
        else:
            summary.tracking_plan_note = (f"no tracking plan at {plan_path}: event types and properties are not "
                                          f"counted against one (cohortflow tracking-plan draft writes it)")

    ensure_raw_tables(con)
    iterator = files
    if progress:
        from tqdm import tqdm  # only when asked: keeps library import light

        iterator = tqdm(files, desc=f"ingest {fmt}", unit="file")
    for path in iterator:
        summary.files.append(_ingest_one(con, path, fmt, entity, mapping, clock, block_bytes, max_field_bytes, plan))
    return summary


def _ingest_one(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, entity: str,
                mapping: CsvMapping | None, now: datetime, block_bytes: int, max_field_bytes: int,
                plan: TrackingPlan | None = None) -> FileResult:
    started = time.perf_counter()
    resolved = path.resolve()
    digest = sha256_of(resolved)
    result = FileResult(path=str(resolved), sha256=digest)
    seen = con.execute(
        f"select count(*) from {RAW_SCHEMA}.ingested_files where file_sha256 = ? and source_format = ? and entity = ?",
        [digest, fmt, entity]).fetchone()[0]
    if seen:
        result.skipped_as_already_ingested = True
        return result

    prefix = temp_prefix()
    ctx = FileContext(fmt=fmt, entity=entity, source_file=str(resolved), sha256=digest, now=now, prefix=prefix,
                      max_field_bytes=max_field_bytes, plan_table=f"{prefix}_plan" if plan is not None else None)
    con.begin()
    try:
        if plan is not None:
            create_plan_table(con, f"{prefix}_plan", plan)
        counts = _dispatch(con, resolved, ctx, mapping, block_bytes)
        write_untracked(con, fmt, str(resolved), now, counts.untracked.rows())
        con.execute(f"insert into {RAW_SCHEMA}.ingested_files values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [digest, fmt, entity, str(resolved), counts.rows_read, counts.rows_loaded,
                     counts.rows_duplicate, counts.rows_rejected, now])
        con.commit()
    except BaseException as exc:
        # All or nothing per file: a crash (even Ctrl-C) must not leave half a file behind.
        con.rollback()
        if isinstance(exc, duckdb.Error):
            raise IngestError(f"{path}: could not be ingested: {str(exc).strip().splitlines()[0]}") from exc
        raise
    finally:
        _drop_temp_tables(con, ctx.prefix)
    result.rows_read, result.rows_loaded = counts.rows_read, counts.rows_loaded
    result.rows_duplicate, result.rows_rejected = counts.rows_duplicate, counts.rows_rejected
    result.rejected_by_reason = dict(sorted(counts.rejected_by_reason.items()))
    result.users_loaded, result.items_loaded = counts.users_loaded, counts.items_loaded
    result.untracked = counts.untracked.rows()
    result.events_with_untracked_properties = counts.untracked.events_with_untracked_properties
    result.seconds = time.perf_counter() - started
    return result


def _dispatch(con: duckdb.DuckDBPyConnection, path: Path, ctx: FileContext, mapping: CsvMapping | None,
              block_bytes: int) -> Counts:
    if ctx.fmt in ("amplitude", "amplitude-export"):
        from cohortflow.ingest.amplitude import ingest_amplitude

        return ingest_amplitude(con, path, ctx, export=ctx.fmt == "amplitude-export", block_bytes=block_bytes)
    if ctx.fmt == "csv":
        from cohortflow.ingest.csv_format import ingest_csv

        return ingest_csv(con, path, ctx, mapping, block_bytes=block_bytes)
    from cohortflow.ingest.online_retail import ingest_online_retail

    return ingest_online_retail(con, path, ctx, block_bytes=block_bytes)


def _drop_temp_tables(con: duckdb.DuckDBPyConnection, prefix: str) -> None:
    for (name,) in con.execute(
            "select table_name from duckdb_tables() where temporary and starts_with(table_name, ?)", [prefix]).fetchall():
        con.execute(f'drop table if exists temp."{name}"')


def _utc_naive(moment: datetime) -> datetime:
    """UTC wall time without tzinfo (naive input is taken as UTC already)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment
