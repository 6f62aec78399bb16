"""Running a sync: lock, check, plan, send, mark — and record every run.

The order is the product's safety promise. The plan is computed against what was last
*acknowledged*; records are handed to the destination; only what the destination acknowledged is
marked in ``sync_state`` (in the same transaction as the run's counters and the per-record log).
So a crash or a destination error at any point leaves a state that the next run can finish from:

* a record destination gets batches that were first written to ``sync_outbox`` (in groups, one
  commit per group) with their idempotency keys. Acknowledged batches are marked every few seconds
  and always before a failure is recorded; the mark deletes their outbox rows in the same
  transaction. Whatever is still in the outbox when a run dies — sent or not, acknowledged or not —
  is re-sent first by the next run under the same key, so a receiver that de-duplicates on the key
  applies each batch once, and nothing is lost;
* a whole batch refused with a permanent error is split in halves until the bad records are alone;
* a snapshot destination (file) is all or nothing: the state moves only after the file is in place.

``docs/sync-engine.md`` states the guarantees exactly.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from reverse_etl.control import pause_info
from reverse_etl.destinations.base import (
    BatchResult,
    ChangeBatch,
    Destination,
    RecordDestination,
    RunInfo,
    SnapshotDestination,
)
from reverse_etl.errors import BatchRejectedError, DestinationError, SyncError, SyncSpecError
from reverse_etl.lock import SyncLock, default_lock_dir
from reverse_etl.plan import (
    STATUS_REJECTED,
    STATUS_SKIPPED,
    MappedField,
    MarkSpan,
    Outcome,
    PlannedBatch,
    SyncPlan,
    plan_sync,
    resolve_fields,
    split_key,
)
from reverse_etl.replay import ReplayPlan, batch_fingerprint, plan_replays
from reverse_etl.spec import Operation, SyncMode, SyncSpec, check_identifiers
from reverse_etl.state import STATE_SCHEMA, adopt_unkeyed_rows, ensure_state_tables, sync_identity

logger = logging.getLogger("reverse_etl")

SAMPLE_SIZE = 5
# Acknowledged batches are marked together once this many records or seconds have piled up: each
# mark is a warehouse commit (an fsync), which would otherwise cap a 75-record-batch API at a few
# hundred records a second. Marks are flushed before a failure is recorded; batches a killed
# process had not marked stay in the outbox and are re-sent under the same key.
MARK_EVERY_RECORDS = 50_000
MARK_EVERY_SECONDS = 2.0
# Batches are written to the outbox this many records at a time (whole batches, one commit, shared
# with the pending marks) before any of them is sent.
OUTBOX_EVERY_RECORDS = 50_000
# A whole-batch refusal with one of these statuses is about the request (credentials, endpoint),
# not about a record: the run fails instead of splitting the batch and refusing every record.
NOT_SPLIT_STATUSES = frozenset({401, 403, 404, 405, 407})
NO_REASON = "(the destination gave no reason)"

STATUS_RUNNING = "running"
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"
STATUS_DRY_RUN = "dry_run"
STATUS_ABANDONED = "abandoned"
STATUS_PAUSED = "paused"


@dataclass(frozen=True)
class SyncResult:
    """What one run did (or, for a dry run, would do).

    Attributes
    ----------
    run_id, sync_name
        Identify the run (``run_id`` is the key of ``cohortflow_syncs.sync_runs``).
    status
        ``succeeded``, ``failed``, ``dry_run`` or ``paused`` (nothing sent; a dry run of a paused
        sync is ``paused`` too, with ``dry_run`` true and the counts it would send once resumed).
    rows_processed
        Records handed to the destination: acknowledged + rejected + skipped by the destination
        (dry run: that would be).
    rows_added, rows_changed, rows_removed
        Records acknowledged per operation (dry run: planned).
    rows_rejected
        Records the destination refused, both classes. Transient ones are retried by the next run.
    rows_rejected_permanently
        Of ``rows_rejected``, those refused for good: not sent again until their data changes.
    rows_skipped_by_destination
        Records the destination did not send by its own rule (e.g. no usable identifier): not sent
        again until their data changes.
    rows_skipped
        Diff records the mode does not send (e.g. removes under ``upsert``).
    rows_held
        Records not sent because the destination refused or skipped this very data before.
    rows_replayed
        Records re-sent, exactly as first sent, under the idempotency key of a batch an earlier run
        did not mark (dry run: that would be).
    rows_excluded_consent, rows_excluded_suppressed
        Source records left out of the audience: without consent; with consent (or none required)
        but in a suppression relation.
    rows_unchanged
        Audience records identical to what was last sent.
    audience_size
        Records in the audience (source less exclusions) when the run planned.
    destination_location, destination_kind
        Where the records went (a path or URL, never a secret) and the destination type.
    sample_added, sample_removed
        A few record keys of each, for a quick look.
    rejected_sample
        A few ``(record_key, reason)`` pairs (rejections and skips).
    error
        Why the run failed.
    note
        For a paused sync, the pause reason and time.
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
    rows_rejected_permanently: int = 0
    rows_skipped_by_destination: int = 0
    rows_held: int = 0
    rows_replayed: int = 0
    rows_excluded_consent: int = 0
    rows_excluded_suppressed: int = 0
    note: str | None = None

    @property
    def succeeded(self) -> bool:
        """True for a finished, non-dry run (partial rejections still count as success)."""
        return self.status == STATUS_SUCCEEDED

    @property
    def paused(self) -> bool:
        """True when the sync was paused, so nothing was sent."""
        return self.status == STATUS_PAUSED

    def format_text(self) -> str:
        """A few human-readable lines for a terminal or a log."""
        head = f"sync {self.sync_name}  run {self.run_id}  {self.status.upper()}  ({self.mode.value}"
        head += ", full resync)" if self.full_resync else ")"
        verb = "would send" if self.dry_run else "sent"
        lines = [
            head,
            f"  destination: {self.destination_kind} {self.destination_location}",
            f"  audience: {self.audience_size:,} records",
        ]
        if self.paused and not self.dry_run:
            lines.append(f"  paused: nothing was sent ({self.note})")
            return "\n".join(lines)
        lines.append(
            f"  {verb}: {self.rows_added:,} added, {self.rows_changed:,} changed, {self.rows_removed:,} removed"
            f"  |  unchanged {self.rows_unchanged:,}, rejected {self.rows_rejected:,}, not sent by mode {self.rows_skipped:,}"
        )
        extra = [
            f"{label} {n:,}"
            for label, n in (
                ("rejected for good", self.rows_rejected_permanently),
                ("skipped by destination", self.rows_skipped_by_destination),
                ("held (refused before, unchanged)", self.rows_held),
                ("replayed from the outbox", self.rows_replayed),
                ("excluded without consent", self.rows_excluded_consent),
                ("suppressed", self.rows_excluded_suppressed),
            )
            if n
        ]
        if extra:
            lines.append(f"  also: {', '.join(extra)}")
        if self.sample_added:
            lines.append(f"  e.g. added: {', '.join(self.sample_added)}")
        if self.sample_removed:
            lines.append(f"  e.g. removed: {', '.join(self.sample_removed)}")
        for key, reason in self.rejected_sample:
            lines.append(f"  not applied {key}: {reason}")
        if self.paused:
            lines.append(f"  paused ({self.note}): a real run sends nothing until the sync is resumed")
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
            "rows_rejected_permanently": self.rows_rejected_permanently,
            "rows_skipped_by_destination": self.rows_skipped_by_destination,
            "rows_skipped": self.rows_skipped,
            "rows_held": self.rows_held,
            "rows_replayed": self.rows_replayed,
            "rows_excluded_consent": self.rows_excluded_consent,
            "rows_excluded_suppressed": self.rows_excluded_suppressed,
            "rows_unchanged": self.rows_unchanged,
            "note": self.note,
        }


@dataclass
class _Counters:
    added: int = 0
    changed: int = 0
    removed: int = 0
    rejected: int = 0
    rejected_permanently: int = 0
    skipped_by_destination: int = 0
    rejected_sample: list[tuple[str, str]] = field(default_factory=list)

    def count(self, counts: dict[tuple[str, str, bool], int], outcomes: dict[str, Outcome]) -> None:
        """Add a mark's ``(operation, status, refused) -> records`` counts."""
        for (operation, status, refused), n in counts.items():
            if status == STATUS_REJECTED:
                self.rejected += n
                if refused:
                    self.rejected_permanently += n
            elif status == STATUS_SKIPPED:
                self.skipped_by_destination += n
            elif operation == Operation.ADD.value:
                self.added += n
            elif operation == Operation.CHANGE.value:
                self.changed += n
            else:
                self.removed += n
        for key, outcome in sorted(outcomes.items()):
            if len(self.rejected_sample) >= SAMPLE_SIZE:
                break
            self.rejected_sample.append((key, outcome.reason))

    @property
    def processed(self) -> int:
        return self.added + self.changed + self.removed + self.rejected + self.skipped_by_destination


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
    """Run one sync: replay what an earlier run left unmarked, send what changed, then record it.

    Parameters
    ----------
    con
        Writable connection to the warehouse holding ``spec.source_relation``.
    spec
        The sync.
    destination
        A :class:`RecordDestination` or :class:`SnapshotDestination`.
    full_resync
        Send every audience record again, as if never sent, refused ones included (removes are
        still computed).
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
        Status ``succeeded`` (also when some records were rejected), ``dry_run`` or ``paused``.

    Raises
    ------
    SyncSpecError
        Bad arguments, a mode needing an operation the destination cannot do, or identifier kinds
        the destination needs that the sync does not map.
    SyncLockedError
        Another run of this sync is in progress (nothing is recorded for this attempt).
    SyncError
        Anything that failed the run (missing source, bad key, destination error...). The run is
        recorded as ``failed`` with the error, ``exc.result`` holds its :class:`SyncResult`, and
        the state holds exactly what the destination acknowledged. Destination errors keep their
        type (e.g. :class:`~reverse_etl.errors.TransientDestinationError`).
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
    check_identifiers(spec, destination)
    if destination.requires_consent and spec.consent_relation is None:
        logger.warning(
            "sync %s: the %s destination is a marketing destination but the sync declares no consent_relation; "
            "every audience record is sent", spec.name, destination.kind,
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
    sync_id = sync_identity(name, destination.location)
    adopt_unkeyed_rows(con, sync_id, name, destination.location)
    # We hold the lock, so any run of this sync still marked 'running' died without finishing.
    con.execute(
        f"update {STATE_SCHEMA}.sync_runs set status = ?, finished_at = ?, "
        "error = 'the run stopped before finishing (process killed?); what it sent is in sync_records, "
        "what it did not mark is in sync_outbox and is re-sent by the next run' "
        "where sync_name = ? and status = ?",
        [STATUS_ABANDONED, started_at, name, STATUS_RUNNING],
    )
    paused = pause_info(con, name)
    note = None
    if paused is not None:
        note = f"paused since {paused['paused_at']:%Y-%m-%d %H:%M:%S} UTC" + (f": {paused['reason']}" if paused["reason"] else "")
    con.execute(
        f"insert into {STATE_SCHEMA}.sync_runs (sync_id, run_id, sync_name, started_at, status, mode, dry_run, full_resync, "
        "destination) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [sync_id, run_id, name, started_at, STATUS_RUNNING, spec.sync_mode.value, dry_run, full_resync, destination.location],
    )
    logger.info("sync %s run %s started (%s%s)", name, run_id, spec.sync_mode.value, ", dry run" if dry_run else "")

    counters = _Counters()
    plan: SyncPlan | None = None
    replayed_rows = 0
    samples: dict[Operation, tuple[str, ...]] = {}
    # Which batch was on its way when something failed, for the error message.
    in_flight: list[str] = []

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
            rows_rejected_permanently=counters.rejected_permanently,
            rows_skipped_by_destination=counters.skipped_by_destination,
            rows_held=plan.held if plan else 0,
            rows_replayed=replayed_rows,
            rows_excluded_consent=plan.excluded_consent if plan else 0,
            rows_excluded_suppressed=plan.excluded_suppressed if plan else 0,
            note=note,
        )

    def save_run(res: SyncResult) -> None:
        con.execute(
            f"update {STATE_SCHEMA}.sync_runs set finished_at = ?, status = ?, rows_processed = ?, rows_added = ?, "
            "rows_changed = ?, rows_removed = ?, rows_rejected = ?, rows_skipped = ?, error = ?, "
            "rows_rejected_permanently = ?, rows_skipped_by_destination = ?, rows_held = ?, rows_replayed = ?, "
            "rows_excluded_consent = ?, rows_excluded_suppressed = ?, rows_unchanged = ?, audience_size = ?, note = ? "
            "where run_id = ?",
            [res.finished_at, res.status, res.rows_processed, res.rows_added, res.rows_changed, res.rows_removed,
             res.rows_rejected, res.rows_skipped, res.error, res.rows_rejected_permanently,
             res.rows_skipped_by_destination, res.rows_held, res.rows_replayed, res.rows_excluded_consent,
             res.rows_excluded_suppressed, res.rows_unchanged, res.audience_size, res.note, run_id],
        )

    def commit(
        source: SyncPlan | ReplayPlan,
        spans: Sequence[MarkSpan] = (),
        outcomes: dict[str, Outcome] | None = None,
        *,
        outbox: Sequence[PlannedBatch] = (),
        relabels: Sequence[tuple[str, str, int, int]] = (),
        forget_outbox: bool = False,
    ) -> None:
        """One warehouse transaction: marks (state, records, refusals, outbox deletions), outbox
        relabels and writes, and the run's counters — all or nothing. ``source`` is the plan or the
        replays whose positions the spans refer to."""
        outcomes = outcomes or {}
        con.begin()
        try:
            moment = clock()
            if spans:
                counters.count(source.mark(run_id=run_id, sent_at=moment, spans=spans, outcomes=outcomes), outcomes)
            for old_key, new_key, low, high in relabels:
                source.relabel_outbox(old_key=old_key, new_key=new_key, low=low, high=high)
            if outbox:
                source.write_outbox(
                    run_id=run_id, batches=outbox, written_at=moment, created_at=started_at, fingerprint=fingerprint,
                )
            if forget_outbox and isinstance(source, SyncPlan):
                source.forget_outbox()
            # Counters move with the marks, so even a run that dies later shows what it delivered.
            save_run(result(STATUS_RUNNING))
            con.commit()
        except BaseException:
            con.rollback()
            raise

    try:
        if paused is not None and not dry_run:
            final = result(STATUS_PAUSED)
            save_run(final)
            logger.info("sync %s run %s: %s; nothing sent", name, run_id, note)
            return final
        destination.check()
        fields = resolve_fields(con, spec)
        fingerprint = batch_fingerprint(destination, fields)
        run = RunInfo(
            sync_name=name,
            run_id=run_id,
            mode=spec.sync_mode,
            full_resync=full_resync,
            started_at=started_at,
            fields=tuple(f.name for f in fields),
            primary_key_fields=_primary_key_fields(spec, fields),
        )
        if isinstance(destination, RecordDestination):
            # First what earlier runs left unmarked, exactly as it was sent; then the plan, which
            # sees the state those replays leave and sends what changed since under new keys.
            # In passes: a batch held back by a later one for the same record may become replayable
            # once that later one was refused without being applied. Every pass settles each batch
            # it sends (acknowledged or refused), so the passes end.
            while True:
                with plan_replays(con, spec, destination, sync_id=sync_id, fields=fields) as replays:
                    if dry_run or not replays.batches:
                        replayed_rows += replays.rows
                        for skip in replays.skipped:
                            logger.warning(
                                "sync %s: outbox batch %s (%d records) is not replayed: %s; its records are sent "
                                "again under new keys", name, skip.batch_key, skip.records, skip.reason,
                            )
                        break
                    logger.info("sync %s: replaying %d outbox batch(es), %d records", name, replays.batches, replays.rows)
                    replayed_rows += replays.rows
                    with _session(destination, run):
                        _RecordSender(replays, destination, run, spec, commit, in_flight).send()
        plan = plan_sync(
            con, spec, destination=destination, full_resync=full_resync, replay=isinstance(destination, RecordDestination)
        )
        logger.info("%s", plan.summary())
        for operation in (Operation.ADD, Operation.REMOVE):
            if operation in spec.sync_mode.operations:
                samples[operation] = tuple(plan.sample_keys(operation, SAMPLE_SIZE, sent_only=True))
        if dry_run:
            # Report what would be sent, in the same columns a real run fills.
            counters.added = plan.to_send[Operation.ADD]
            counters.changed = plan.to_send[Operation.CHANGE]
            counters.removed = plan.to_send[Operation.REMOVE]
            final = result(STATUS_PAUSED if paused is not None else STATUS_DRY_RUN)
            save_run(final)
            return final

        if isinstance(destination, SnapshotDestination):
            _send_snapshot(plan, destination, run, commit)
        else:
            assert isinstance(destination, RecordDestination)
            with _session(destination, run):
                _RecordSender(plan, destination, run, spec, commit, in_flight).send()
        plan.forget_stale_refusals()
        final = result(STATUS_SUCCEEDED)
        save_run(final)
        logger.info(
            "sync %s run %s succeeded: %d added, %d changed, %d removed, %d rejected, %d skipped by the destination",
            name, run_id, final.rows_added, final.rows_changed, final.rows_removed, final.rows_rejected,
            final.rows_skipped_by_destination,
        )
        return final
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, SyncError) else f"{type(exc).__name__}: {exc}"
        if in_flight:
            reason += f" ({in_flight[-1]})"
        failed = result(STATUS_FAILED, reason)
        try:
            save_run(failed)
        except Exception:  # the original error matters more than the bookkeeping one
            logger.exception("sync %s run %s: could not record the failure", name, run_id)
        logger.warning("sync %s run %s failed: %s", name, run_id, reason)
        if isinstance(exc, SyncError):
            if isinstance(exc, DestinationError) and exc.args and not str(exc.args[0]).startswith("sync "):
                # Keep the destination's error type (callers tell transient from permanent by it),
                # but make its message name the sync and the destination.
                exc.args = (f"sync {name!r} ({destination.kind} {destination.location}): {reason}", *exc.args[1:])
            exc.result = failed
            raise
        if not isinstance(exc, Exception):  # KeyboardInterrupt / SystemExit: recorded, not wrapped
            raise
        raise SyncError(f"sync {name!r} failed ({destination.kind} {destination.location}): {reason}", result=failed) from exc
    finally:
        if plan is not None:
            plan.close()


def _primary_key_fields(spec: SyncSpec, fields: Sequence[MappedField]) -> tuple[str, ...]:
    """Destination fields carrying the primary key, in key order."""
    return tuple(next(f.name for f in fields if f.column.lower() == column.lower()) for column in spec.primary_key)


class _session:
    """``destination.begin(run)`` ... ``destination.finish(run, succeeded=...)`` around a block."""

    def __init__(self, destination: RecordDestination, run: RunInfo) -> None:
        self.destination, self.run = destination, run

    def __enter__(self) -> None:
        self.destination.begin(self.run)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.destination.finish(self.run, succeeded=exc_type is None)


def _send_snapshot(plan: SyncPlan, destination: SnapshotDestination, run: RunInfo, commit: Callable[..., None]) -> None:
    """Hand the whole audience over; mark every planned record only once it is written."""
    snapshot = plan.snapshot(run, flat_columns=destination.flat_columns)
    try:
        # Written on every run, changed or not: the file then always equals the audience, even
        # if someone deleted it or a crash came between the write and the mark.
        destination.write_snapshot(snapshot)
    finally:
        snapshot.close()
    # All or nothing, like the file itself. The destination now holds the whole audience, so no
    # outbox row (left by a record destination this sync used before) is in doubt any more.
    spans = [MarkSpan(1, plan.rows_to_send)] if plan.rows_to_send else []
    commit(plan, spans, forget_outbox=True)


def _part(batch: ChangeBatch, start: int, stop: int) -> ChangeBatch:
    """Records ``start:stop`` of a batch, under a key derived from the batch's key and those records."""
    keys = batch.keys[start:stop]
    return ChangeBatch(
        operation=batch.operation,
        sequence=batch.sequence,
        keys=keys,
        records=batch.records.slice(start, stop - start),
        idempotency_key=split_key(batch.idempotency_key, keys),
        created_at=batch.created_at,
    )


@dataclass(frozen=True)
class _Flight:
    """A batch handed to the destination on the worker thread, not answered yet."""

    future: Future[Any]
    batch: ChangeBatch
    low: int
    high: int


class _RecordSender:
    """Outbox, send, split, mark: the record-destination half of a run.

    ``plan`` is the run's :class:`SyncPlan`, or the :class:`ReplayPlan` of the batches replayed first.
    """

    def __init__(
        self,
        plan: SyncPlan | ReplayPlan,
        destination: RecordDestination,
        run: RunInfo,
        spec: SyncSpec,
        commit: Callable[..., None],
        in_flight: list[str],
    ) -> None:
        self.plan = plan
        self.destination = destination
        self.run = run
        self.spec = spec
        self.commit = commit
        self.in_flight = in_flight
        self.size = min(spec.batch_size, destination.max_batch_size or spec.batch_size)
        self.pending_spans: list[MarkSpan] = []
        self.pending_outcomes: dict[str, Outcome] = {}
        self.pending_records = 0
        self.last_mark = time.monotonic()

    def flush(
        self, *, outbox: Sequence[PlannedBatch] = (), relabels: Sequence[tuple[str, str, int, int]] = ()
    ) -> None:
        """Commit pending marks (with outbox writes / relabels, when given) in one transaction."""
        if not (self.pending_spans or outbox or relabels):
            return
        self.commit(self.plan, self.pending_spans, self.pending_outcomes, outbox=outbox, relabels=relabels)
        # Cleared only once committed: after a failed commit, the failure path tries the marks again.
        self.pending_spans, self.pending_outcomes, self.pending_records = [], {}, 0
        self.last_mark = time.monotonic()

    def send(self) -> None:
        """Send every planned batch: outbox group by group, marks every few seconds / records."""
        planned = self.plan.batch_plan(self.size, run_id=self.run.run_id, created_at=self.run.started_at)
        groups: list[list[PlannedBatch]] = []
        group_records = OUTBOX_EVERY_RECORDS
        for pb in planned:
            if group_records >= OUTBOX_EVERY_RECORDS:
                groups.append([])
                group_records = 0
            groups[-1].append(pb)
            group_records += len(pb)

        # One batch in flight on a worker thread while this thread does the warehouse work around it
        # (reading the next batch, committing marks and the next outbox group): the destination and
        # DuckDB then work at the same time instead of taking turns. The worker only calls
        # send_batch; answers are handled here, in order, so the warehouse connection is never used
        # by two threads and splits stay synchronous.
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sync-{self.spec.name}")
        flight: _Flight | None = None
        try:
            for number, group in enumerate(groups):
                new = [pb for pb in group if not pb.replayed]
                if new:
                    # Written (and committed) before any batch of the group leaves: a crash from
                    # here on leaves them to be re-sent under these keys. (The previous group's
                    # last batch may be in flight meanwhile; its mark is not part of this commit.)
                    self.flush(outbox=new)
                # The next group's outbox write commits the pending marks anyway.
                next_commits = number + 1 < len(groups) and any(not pb.replayed for pb in groups[number + 1])
                for pb, batch in self.plan.read_batches(group):
                    if flight is not None:
                        self.settle(flight)
                        flight = None
                    self.announce(batch)
                    flight = _Flight(worker.submit(self.destination.send_batch, self.run, batch), batch, pb.low, pb.high)
                    if next_commits and pb is group[-1]:
                        continue
                    if (
                        self.pending_records >= MARK_EVERY_RECORDS
                        or time.monotonic() - self.last_mark >= MARK_EVERY_SECONDS
                    ):
                        self.flush()
            if flight is not None:
                self.settle(flight)
                flight = None
            self.flush()
        except BaseException:
            if flight is not None:
                # Whatever failed here, the batch in flight may have been acknowledged: wait for it
                # and mark it if so. Nothing more is sent (no split); a batch not acknowledged stays
                # in the outbox and is re-sent under its key by the next run.
                try:
                    self.answered(flight.batch, flight.low, flight.high, flight.future.result())
                except BaseException:
                    logger.debug("sync %s: the batch in flight was not acknowledged", self.spec.name, exc_info=True)
            # What the destination acknowledged before the failure must not be sent again.
            try:
                self.flush()
            except Exception:
                logger.exception(
                    "sync %s: could not mark acknowledged batches after a failure; they stay in the outbox and "
                    "are re-sent under the same keys", self.spec.name,
                )
            raise
        finally:
            worker.shutdown(wait=True)

    def announce(self, batch: ChangeBatch) -> None:
        """Say which batch is unacknowledged, for the failure message of a run that dies now."""
        self.in_flight[:] = [
            f"batch {batch.sequence}: {len(batch)} {batch.operation.value} record(s), idempotency key "
            f"{batch.idempotency_key}; unacknowledged, it stays in the outbox and the next run re-sends it"
        ]

    def settle(self, flight: _Flight) -> None:
        """Wait for the batch in flight and handle its answer (on this thread)."""
        try:
            answer = flight.future.result()
        except BatchRejectedError as exc:
            self.refused_whole(flight.batch, flight.low, flight.high, exc)
            return
        self.answered(flight.batch, flight.low, flight.high, answer)

    def deliver(self, batch: ChangeBatch, low: int, high: int) -> None:
        """Send one batch now (split it when it is refused whole) and queue its mark."""
        self.announce(batch)
        try:
            answer = self.destination.send_batch(self.run, batch)
        except BatchRejectedError as exc:
            self.refused_whole(batch, low, high, exc)
            return
        self.answered(batch, low, high, answer)

    def answered(self, batch: ChangeBatch, low: int, high: int, answer: object) -> None:
        """Queue the mark of a batch the destination answered."""
        self.in_flight.clear()
        outcomes = self.outcomes(batch, answer)
        self.queue(MarkSpan(low, high, batch.idempotency_key), outcomes, len(batch))

    def refused_whole(self, batch: ChangeBatch, low: int, high: int, exc: BatchRejectedError) -> None:
        """A batch refused as a whole: isolate the bad record(s) by splitting, or refuse the single one."""
        if exc.status in NOT_SPLIT_STATUSES:
            raise DestinationError(
                f"sync {self.spec.name!r}: the {self.destination.kind} destination {self.destination.location} refused "
                f"a whole batch with status {exc.status} ({exc.reason}); that is about the request (credentials, "
                "endpoint), not a record, so the batch is not split: fix the destination settings"
            ) from exc
        if len(batch) == 1:
            reason = exc.reason or NO_REASON
            self.queue(MarkSpan(low, low, batch.idempotency_key), {batch.keys[0]: Outcome(STATUS_REJECTED, reason, True)}, 1)
        else:
            self.split(batch, low, high)

    def split(self, batch: ChangeBatch, low: int, high: int) -> None:
        """Send the two halves of a batch, each under a derived key written to the outbox first."""
        middle = len(batch) // 2
        first, second = _part(batch, 0, middle), _part(batch, middle, len(batch))
        self.flush(relabels=[
            (batch.idempotency_key, first.idempotency_key, low, low + middle - 1),
            (batch.idempotency_key, second.idempotency_key, low + middle, high),
        ])
        self.deliver(first, low, low + middle - 1)
        self.deliver(second, low + middle, high)

    def queue(self, span: MarkSpan, outcomes: dict[str, Outcome], records: int) -> None:
        """Keep an answered batch for the next mark."""
        self.pending_spans.append(span)
        self.pending_outcomes.update(outcomes)
        self.pending_records += records

    def outcomes(self, batch: ChangeBatch, answer: object) -> dict[str, Outcome]:
        """The destination's answer as per-record outcomes, checked against the batch."""
        if answer is None:
            return {}
        if not isinstance(answer, BatchResult):
            raise SyncError(
                f"sync {self.spec.name!r}: {self.destination.kind} destination returned {type(answer).__name__} for batch "
                f"{batch.sequence}, expected BatchResult or None"
            )
        keys = set(batch.keys)
        out: dict[str, Outcome] = {}
        for label, mapping, status, refused in (
            ("rejected", answer.rejected, STATUS_REJECTED, False),
            ("permanent", answer.permanent, STATUS_REJECTED, True),
            ("skipped", answer.skipped, STATUS_SKIPPED, True),
        ):
            unknown = sorted(set(mapping) - keys)
            if unknown:
                raise SyncError(
                    f"sync {self.spec.name!r}: {self.destination.kind} destination answered {label} for key(s) not in batch "
                    f"{batch.sequence}: {unknown[:SAMPLE_SIZE]}"
                )
            for key, reason in mapping.items():
                if key in out:
                    raise SyncError(
                        f"sync {self.spec.name!r}: {self.destination.kind} destination answered record {key!r} of batch "
                        f"{batch.sequence} twice ({label} and an earlier class)"
                    )
                out[key] = Outcome(status, str(reason) if reason else NO_REASON, refused)
        return out
