"""Running a sync: lock, check, plan, send, mark — and record every run.

The order is the product's safety promise. The plan is computed against what was last
*acknowledged*; records are handed to the destination; only what the destination acknowledged is
marked in ``sync_state`` (in the same transaction as the run's counters and the per-record log).
So a crash or a destination error at any point leaves a state that the next run can finish from:

* a record destination acknowledges batch by batch; acknowledged batches are marked every few
  seconds and always before a failure is recorded, so after an error the state holds exactly
  the batches it accepted. Batches acknowledged but not yet marked when the process was killed
  are sent again (delivery is at least once);
* a snapshot destination (file) is all or nothing: the state moves only after the file is in place.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from reverse_etl.destinations.base import (
    BatchResult,
    Destination,
    RecordDestination,
    RunInfo,
    SnapshotDestination,
)
from reverse_etl.errors import SyncError, SyncSpecError
from reverse_etl.lock import SyncLock, default_lock_dir
from reverse_etl.plan import SyncPlan, plan_sync
from reverse_etl.spec import Operation, SyncMode, SyncSpec
from reverse_etl.state import STATE_SCHEMA, ensure_state_tables

logger = logging.getLogger("reverse_etl")

SAMPLE_SIZE = 5
# Acknowledged batches are marked together once this many records or seconds have piled up: each
# mark is a warehouse commit (an fsync), which would otherwise cap a 75-record-batch API at a few
# hundred records a second. Marks are flushed before a failure is recorded, so only a killed
# process can lose them (those records are then sent again: delivery is at least once).
MARK_EVERY_RECORDS = 50_000
MARK_EVERY_SECONDS = 2.0

STATUS_RUNNING = "running"
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"
STATUS_DRY_RUN = "dry_run"
STATUS_ABANDONED = "abandoned"


@dataclass(frozen=True)
class SyncResult:
    """What one run did (or, for a dry run, would do).

    Attributes
    ----------
    run_id, sync_name
        Identify the run (``run_id`` is the key of ``cohortflow_syncs.sync_runs``).
    status
        ``succeeded``, ``failed`` or ``dry_run``.
    rows_processed
        Records handed to the destination (dry run: that would be).
    rows_added, rows_changed, rows_removed
        Records acknowledged per operation (dry run: planned).
    rows_rejected
        Records the destination refused; they stay unsent and are retried by the next run.
    rows_skipped
        Diff records the mode does not send (e.g. removes under ``upsert``).
    rows_unchanged
        Source records identical to what was last sent.
    audience_size
        Records in the source relation (the audience) when the run planned.
    destination_location, destination_kind
        Where the records went (a path or URL, never a secret) and the destination type.
    sample_added, sample_removed
        A few record keys of each, for a quick look.
    rejected_sample
        A few ``(record_key, reason)`` pairs.
    """

    run_id: str
    sync_name: str
    status: str
    mode: SyncMode
    dry_run: bool
    full_resync: bool
    destination_location: str
    destination_kind: str
    started_at: datetime
    finished_at: datetime
    rows_processed: int = 0
    rows_added: int = 0
    rows_changed: int = 0
    rows_removed: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    rows_unchanged: int = 0
    audience_size: int = 0
    sample_added: tuple[str, ...] = ()
    sample_removed: tuple[str, ...] = ()
    rejected_sample: tuple[tuple[str, str], ...] = ()
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        """True for a finished, non-dry run (partial rejections still count as success)."""
        return self.status == STATUS_SUCCEEDED

    def format_text(self) -> str:
        """A few human-readable lines for a terminal or a log."""
        head = f"sync {self.sync_name}  run {self.run_id}  {self.status.upper()}  ({self.mode.value}"
        head += ", full resync)" if self.full_resync else ")"
        verb = "would send" if self.dry_run else "sent"
        lines = [
            head,
            f"  destination: {self.destination_kind} {self.destination_location}",
            f"  audience: {self.audience_size:,} records",
            f"  {verb}: {self.rows_added:,} added, {self.rows_changed:,} changed, {self.rows_removed:,} removed"
            f"  |  unchanged {self.rows_unchanged:,}, rejected {self.rows_rejected:,}, not sent by mode {self.rows_skipped:,}",
        ]
        if self.sample_added:
            lines.append(f"  e.g. added: {', '.join(self.sample_added)}")
        if self.sample_removed:
            lines.append(f"  e.g. removed: {', '.join(self.sample_removed)}")
        for key, reason in self.rejected_sample:
            lines.append(f"  rejected {key}: {reason}")
        if self.dry_run:
            lines.append("  dry run: nothing was sent and the sync state did not change")
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for an orchestrator (Dagster asset metadata, JSON logs)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "mode": self.mode.value,
            "dry_run": self.dry_run,
            "full_resync": self.full_resync,
            "destination": self.destination_location,
            "audience_size": self.audience_size,
            "rows_processed": self.rows_processed,
            "rows_added": self.rows_added,
            "rows_changed": self.rows_changed,
            "rows_removed": self.rows_removed,
            "rows_rejected": self.rows_rejected,
            "rows_skipped": self.rows_skipped,
            "rows_unchanged": self.rows_unchanged,
        }


@dataclass
class _Counters:
    added: int = 0
    changed: int = 0
    removed: int = 0
    rejected: int = 0
    rejected_sample: list[tuple[str, str]] = field(default_factory=list)

    def count(self, operation: Operation, acknowledged: int, rejected: dict[str, str]) -> None:
        if operation is Operation.ADD:
            self.added += acknowledged
        elif operation is Operation.CHANGE:
            self.changed += acknowledged
        else:
            self.removed += acknowledged
        self.rejected += len(rejected)
        for item in rejected.items():
            if len(self.rejected_sample) < SAMPLE_SIZE:
                self.rejected_sample.append(item)

    @property
    def processed(self) -> int:
        return self.added + self.changed + self.removed + self.rejected


# (operation, first send position, last send position, rejected record key -> reason)
_Span = tuple[Operation, int, int, dict[str, str]]


def _utc_naive(moment: datetime) -> datetime:
    """The warehouse stores UTC without zone."""
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def new_run_id(started_at: datetime) -> str:
    """Unique, sortable by start time, and safe in file names: ``20250101T120000Z-1a2b3c4d``."""
    return f"{started_at:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:8]}"


def run_sync(
    con: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    destination: Destination,
    *,
    full_resync: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
    lock_dir: str | Path | None = None,
) -> SyncResult:
    """Run one sync: send what changed since the last successful run, then record it.

    Parameters
    ----------
    con
        Writable connection to the warehouse holding ``spec.source_relation``.
    spec
        The sync.
    destination
        A :class:`RecordDestination` or :class:`SnapshotDestination`.
    full_resync
        Send every source record again, as if never sent (removes are still computed).
    dry_run
        Plan only: nothing is sent and the state does not change; a ``sync_runs`` row with
        ``dry_run = true`` records what would have happened.
    now
        Timestamp used for the run (UTC; for tests and backfills). Default: the current time.
    lock_dir
        Folder for the per-sync lock file; default ``<warehouse file>.locks/``.

    Returns
    -------
    SyncResult
        Status ``succeeded`` (also when some records were rejected) or ``dry_run``.

    Raises
    ------
    SyncSpecError
        Bad arguments, or a mode needing an operation the destination cannot do.
    SyncLockedError
        Another run of this sync is in progress (nothing is recorded for this attempt).
    SyncError
        Anything that failed the run (missing source, bad key, destination error...). The run is
        recorded as ``failed`` with the error, ``exc.result`` holds its :class:`SyncResult`, and
        the state holds exactly what the destination acknowledged.
    """
    if not isinstance(spec, SyncSpec):
        raise SyncSpecError(f"run_sync needs a SyncSpec, got {type(spec).__name__}")
    if not isinstance(destination, (RecordDestination, SnapshotDestination)):
        raise SyncSpecError(
            f"sync {spec.name!r}: destination must be a RecordDestination or SnapshotDestination, got {type(destination).__name__}"
        )
    missing_ops = spec.sync_mode.operations - destination.supported_operations
    if missing_ops:
        raise SyncSpecError(
            f"sync {spec.name!r}: mode {spec.sync_mode.value!r} needs {sorted(o.value for o in missing_ops)}, "
            f"which the {destination.kind} destination cannot do"
        )

    clock: Callable[[], datetime] = (lambda: _utc_naive(now)) if now is not None else (lambda: _utc_naive(datetime.now(UTC)))
    started_at = clock()
    run_id = new_run_id(started_at)
    lock = SyncLock(Path(lock_dir) if lock_dir is not None else default_lock_dir(con), spec.name)
    lock.acquire(holder=f"run {run_id}")
    try:
        return _run_locked(con, spec, destination, run_id, started_at, clock, full_resync=full_resync, dry_run=dry_run)
    finally:
        lock.release()


def _run_locked(
    con: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    destination: Destination,
    run_id: str,
    started_at: datetime,
    clock: Callable[[], datetime],
    *,
    full_resync: bool,
    dry_run: bool,
) -> SyncResult:
    name = spec.name
    ensure_state_tables(con)
    # We hold the lock, so any run of this sync still marked 'running' died without finishing.
    con.execute(
        f"update {STATE_SCHEMA}.sync_runs set status = ?, finished_at = ?, "
        "error = 'the run stopped before finishing (process killed?); what it sent is in sync_records' "
        "where sync_name = ? and status = ?",
        [STATUS_ABANDONED, started_at, name, STATUS_RUNNING],
    )
    con.execute(
        f"insert into {STATE_SCHEMA}.sync_runs (run_id, sync_name, started_at, status, mode, dry_run, full_resync, destination) "
        "values (?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, name, started_at, STATUS_RUNNING, spec.sync_mode.value, dry_run, full_resync, destination.location],
    )
    logger.info("sync %s run %s started (%s%s)", name, run_id, spec.sync_mode.value, ", dry run" if dry_run else "")

    counters = _Counters()
    plan: SyncPlan | None = None
    samples: dict[Operation, tuple[str, ...]] = {}
    in_transaction = False

    def result(status: str, error: str | None = None) -> SyncResult:
        return SyncResult(
            run_id=run_id,
            sync_name=name,
            status=status,
            mode=spec.sync_mode,
            dry_run=dry_run,
            full_resync=full_resync,
            destination_location=destination.location,
            destination_kind=destination.kind,
            started_at=started_at,
            finished_at=clock(),
            rows_processed=counters.processed,
            rows_added=counters.added,
            rows_changed=counters.changed,
            rows_removed=counters.removed,
            rows_rejected=counters.rejected,
            rows_skipped=plan.rows_skipped if plan else 0,
            rows_unchanged=plan.unchanged if plan else 0,
            audience_size=plan.source_rows if plan else 0,
            sample_added=samples.get(Operation.ADD, ()),
            sample_removed=samples.get(Operation.REMOVE, ()),
            rejected_sample=tuple(counters.rejected_sample),
            error=error,
        )

    def save_run(res: SyncResult) -> None:
        con.execute(
            f"update {STATE_SCHEMA}.sync_runs set finished_at = ?, status = ?, rows_processed = ?, rows_added = ?, "
            "rows_changed = ?, rows_removed = ?, rows_rejected = ?, rows_skipped = ?, error = ? where run_id = ?",
            [res.finished_at, res.status, res.rows_processed, res.rows_added, res.rows_changed, res.rows_removed,
             res.rows_rejected, res.rows_skipped, res.error, run_id],
        )

    def mark(spans: list[_Span]) -> None:
        """Advance the state for acknowledged send positions, in one transaction."""
        nonlocal in_transaction
        assert plan is not None
        con.begin()
        in_transaction = True
        sent_at = clock()
        for operation, low, high, rejected in spans:
            acknowledged, _ = plan.mark_acknowledged(run_id=run_id, sent_at=sent_at, low=low, high=high, rejected=rejected)
            counters.count(operation, acknowledged, rejected)
        # Counters move with the marks, so even a run that dies later shows what it delivered.
        save_run(result(STATUS_RUNNING))
        con.commit()
        in_transaction = False

    try:
        destination.check()
        plan = plan_sync(con, spec, full_resync=full_resync)
        logger.info("%s", plan.summary())
        for operation in (Operation.ADD, Operation.REMOVE):
            if operation in spec.sync_mode.operations:
                samples[operation] = tuple(plan.sample_keys(operation, SAMPLE_SIZE))
        if dry_run:
            # Report what would be sent, in the same columns a real run fills.
            counters.added = plan.to_send[Operation.ADD]
            counters.changed = plan.to_send[Operation.CHANGE]
            counters.removed = plan.to_send[Operation.REMOVE]
            final = result(STATUS_DRY_RUN)
            save_run(final)
            return final

        run = RunInfo(
            sync_name=name,
            run_id=run_id,
            mode=spec.sync_mode,
            full_resync=full_resync,
            started_at=started_at,
            fields=plan.field_names,
            primary_key_fields=plan.primary_key_fields,
        )
        if isinstance(destination, SnapshotDestination):
            _send_snapshot(plan, destination, run, mark)
        else:
            assert isinstance(destination, RecordDestination)
            _send_records(plan, destination, run, spec, mark)
        final = result(STATUS_SUCCEEDED)
        save_run(final)
        logger.info(
            "sync %s run %s succeeded: %d added, %d changed, %d removed, %d rejected",
            name, run_id, final.rows_added, final.rows_changed, final.rows_removed, final.rows_rejected,
        )
        return final
    except BaseException as exc:
        if in_transaction:
            con.rollback()
        reason = str(exc) if isinstance(exc, SyncError) else f"{type(exc).__name__}: {exc}"
        failed = result(STATUS_FAILED, reason)
        try:
            save_run(failed)
        except Exception:  # the original error matters more than the bookkeeping one
            logger.exception("sync %s run %s: could not record the failure", name, run_id)
        logger.warning("sync %s run %s failed: %s", name, run_id, reason)
        if isinstance(exc, SyncError):
            exc.result = failed
            raise
        if not isinstance(exc, Exception):  # KeyboardInterrupt / SystemExit: recorded, not wrapped
            raise
        raise SyncError(f"sync {name!r} failed ({destination.kind} {destination.location}): {reason}", result=failed) from exc
    finally:
        if plan is not None:
            plan.close()


def _send_snapshot(
    plan: SyncPlan,
    destination: SnapshotDestination,
    run: RunInfo,
    mark: Callable[[list[_Span]], None],
) -> None:
    """Hand the whole audience over; mark every planned record only once it is written."""
    snapshot = plan.snapshot(run, flat_columns=destination.flat_columns)
    try:
        # Written on every run, changed or not: the file then always equals the audience, even
        # if someone deleted it or a crash came between the write and the mark.
        destination.write_snapshot(snapshot)
    finally:
        snapshot.close()
    spans: list[_Span] = [(op, *span, {}) for op in Operation if (span := plan.send_range(op)) is not None]
    if spans:
        # All or nothing, like the file itself.
        mark(spans)


def _send_records(
    plan: SyncPlan,
    destination: RecordDestination,
    run: RunInfo,
    spec: SyncSpec,
    mark: Callable[[list[_Span]], None],
) -> None:
    """Send batch by batch; mark acknowledged batches in groups (see ``MARK_EVERY_RECORDS``)."""
    size = min(spec.batch_size, destination.max_batch_size or spec.batch_size)
    pending: list[_Span] = []
    pending_records = 0
    last_mark = time.monotonic()

    def flush() -> None:
        nonlocal pending_records, last_mark
        if pending:
            spans = pending.copy()
            # Cleared first: if the mark itself fails, those records are simply sent again.
            pending.clear()
            pending_records, last_mark = 0, time.monotonic()
            mark(spans)

    destination.begin(run)
    succeeded = False
    position = 0  # batches cover send positions 1..n contiguously, in order
    try:
        for batch in plan.batches(batch_size=size):
            answer = destination.send_batch(run, batch)
            if answer is not None and not isinstance(answer, BatchResult):
                raise SyncError(
                    f"sync {spec.name!r}: {destination.kind} destination returned {type(answer).__name__} for batch "
                    f"{batch.sequence}, expected BatchResult or None"
                )
            rejected = dict(answer.rejected) if answer else {}
            unknown = set(rejected) - set(batch.keys)
            if unknown:
                raise SyncError(
                    f"sync {spec.name!r}: {destination.kind} destination rejected key(s) not in batch {batch.sequence}: "
                    f"{sorted(unknown)[:SAMPLE_SIZE]}"
                )
            _add_span(pending, (batch.operation, position + 1, position + len(batch), rejected))
            position += len(batch)
            pending_records += len(batch)
            if pending_records >= MARK_EVERY_RECORDS or time.monotonic() - last_mark >= MARK_EVERY_SECONDS:
                flush()
        flush()
        succeeded = True
    except BaseException:
        # What the destination acknowledged before the failure must not be sent again.
        try:
            flush()
        except Exception:
            logger.exception("sync %s: could not mark acknowledged batches after a failure; they will be resent", spec.name)
        raise
    finally:
        destination.finish(run, succeeded=succeeded)


def _add_span(spans: list[_Span], span: _Span) -> None:
    """Append ``span``, merging it into the last one when it continues the same operation."""
    if spans:
        operation, low, high, rejected = spans[-1]
        if operation is span[0] and high + 1 == span[1]:
            spans[-1] = (operation, low, span[2], {**rejected, **span[3]})
            return
    spans.append(span)
