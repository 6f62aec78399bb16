"""Replaying what an earlier run left in the outbox: the same batch, the same bytes, the same key.

A batch in ``sync_outbox`` may or may not have reached the destination (the run died, or its
answer was lost). Receivers de-duplicate on the idempotency key, and the common rule for that —
the HTTP ``Idempotency-Key`` draft, Stripe — is "same key, same request": a key reused with another
body is refused. So a replay sends the batch exactly as it was first built: the same records in the
same order, with the values and types they were sent with, the same operation and the same
creation time, under the same key. Whatever changed since (a record's data, its membership) is not
patched into the replay: the plan made after the replays sends it in a new batch under a new key.

A batch is replayed only while that is possible and allowed; otherwise its records are left to the
plan, which sends them again under new keys as *in doubt* (``sync_records.delivery``):

* the destination's settings or the shipped fields changed since it was written (its bytes would
  differ: another ``cohort_name``, another field);
* the sync's mode no longer sends its operation (a remove after a switch to ``upsert``);
* it adds or changes a record whose user has since lost consent or been suppressed (a user who
  opted out is never sent again, not even as a replay);
* it is larger than the destination's cap today;
* a later outbox batch holds one of its records (the later request may have arrived: sending the
  older one after it would undo it at a receiver, which would then drop the later one's replay);
* it is not whole any more (an acknowledgement settled some of its records), or it was written by a
  version without batch fingerprints.

Batches are replayed in their original order, before anything else of the run, in passes: a batch
that a later one blocked becomes replayable if that later one's record was refused without being
applied; the engine replans after each pass until no batch can be replayed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

import duckdb

from reverse_etl.destinations.base import ChangeBatch, Destination, Secret
from reverse_etl.plan import (
    FETCH_SIZE,
    MappedField,
    MarkSpan,
    Outcome,
    PlannedBatch,
    mark_spans,
    quote_identifier,
    read_planned_batches,
    relabel_outbox_rows,
    source_query,
    struct_type,
)
from reverse_etl.spec import Operation, SyncSpec
from reverse_etl.state import STATE_SCHEMA


def batch_fingerprint(destination: Destination, fields: Sequence[MappedField]) -> str:
    """What a batch's bytes depend on besides its records: the destination and the fields.

    The destination's kind, location and public settings (:meth:`Destination.settings`; secrets
    show as ``***``, so rotating a key changes nothing) and the shipped fields in order with their
    types. A batch is replayed only under the fingerprint it was written with.
    """

    def plain(value: object) -> object:
        return "***" if isinstance(value, Secret) else str(value)

    text = json.dumps(
        {
            "kind": destination.kind,
            "location": destination.location,
            "settings": destination.settings(),
            "fields": [[f.name, f.duckdb_type] for f in fields],
        },
        sort_keys=True,
        default=plain,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class SkippedReplay:
    """An outbox batch that is not replayed, and why (its records are sent anew, in doubt)."""

    batch_key: str
    records: int
    reason: str


class ReplayPlan:
    """The outbox batches of one sync that a run replays first, exactly, in their original order.

    It offers the sender the same reading and marking interface as :class:`~reverse_etl.plan.SyncPlan`
    (``batch_plan``, ``read_batches``, ``mark``, ``relabel_outbox``, ``write_outbox``), over a
    temporary table of the replayed records with global send positions. Close it (or use ``with``).

    Attributes
    ----------
    rows
        Records the replays carry.
    batches
        How many batches are replayed.
    skipped
        Outbox batches that cannot be replayed, with the reason.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        spec: SyncSpec,
        sync_id: str,
        fields: tuple[MappedField, ...],
        table: str,
        planned: list[PlannedBatch],
        skipped: list[SkippedReplay],
    ) -> None:
        self._con = con
        self._table = table
        self.spec = spec
        self.sync_id = sync_id
        self.fields = fields
        self._planned = planned
        self.skipped = skipped
        self.rows = sum(len(b) for b in planned)
        self.batches = len(planned)
        self._closed = False

    # -- the sender's interface ------------------------------------------------------------------

    def batch_plan(
        self, batch_size: int | None = None, *, run_id: str | None = None, created_at: datetime | None = None
    ) -> list[PlannedBatch]:
        """One planned batch per replayed outbox batch, under its old key (sizes are as written)."""
        return list(self._planned)

    def read_batches(
        self, planned: Sequence[PlannedBatch], *, fetch_size: int = FETCH_SIZE
    ) -> Iterator[tuple[PlannedBatch, ChangeBatch]]:
        """Rebuild each batch from the outbox: its records in their places, cast back to the types sent."""
        rec = f"r.record::{struct_type(self.fields)}"
        columns = ", ".join(f"x.rec.{quote_identifier(f.name)} as {quote_identifier(f.name)}" for f in self.fields)

        def window_query(low: int, high: int) -> str:
            return (
                f"select x.record_key as _cf_record_key, {columns} from (select r.record_key, r.send_seq, {rec} as rec "
                f"from {self._table} r where r.send_seq between {low} and {high}) x order by x.send_seq"
            )

        yield from read_planned_batches(self._con, planned, window_query, fetch_size=fetch_size)

    def write_outbox(self, **_: object) -> int:
        """Nothing to write: replayed batches are in the outbox already."""
        return 0

    def relabel_outbox(self, *, old_key: str, new_key: str, low: int, high: int) -> None:
        """Move positions ``low..high`` of a replayed batch to a part's key (the batch was refused whole and is split)."""
        relabel_outbox_rows(
            self._con, self.sync_id, old_key, new_key,
            f"select record_key from {self._table} where send_seq between {int(low)} and {int(high)}",
        )

    def mark(
        self, *, run_id: str, sent_at: datetime, spans: Sequence[MarkSpan], outcomes: Mapping[str, Outcome] | None = None
    ) -> dict[tuple[str, str, bool], int]:
        """Record the destination's answers; an acknowledged add or change moves the state to the values replayed."""
        return mark_spans(
            self._con, sync_id=self.sync_id, sync_name=self.spec.name, run_id=run_id, sent_at=sent_at,
            spans=spans, outcomes=outcomes or {},
            positions_sql=f"select record_key, operation, record_hash, send_seq, delivery, true as replayed, batch_order "
            f"from {self._table}",
            values_sql=f"select record_key, record from {self._table} where operation <> 'remove'",
        )

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the temporary table (idempotent)."""
        if not self._closed:
            self._con.execute(f"drop table if exists {self._table}")
            self._closed = True

    def __enter__(self) -> ReplayPlan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def plan_replays(
    con: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    destination: Destination,
    *,
    sync_id: str,
    fields: tuple[MappedField, ...],
) -> ReplayPlan:
    """Which of the sync's outbox batches are replayed now, and which are not (see the module docstring).

    Parameters
    ----------
    con
        Writable warehouse connection (a temporary table is created).
    spec, destination
        The sync and where it ships today.
    sync_id
        The sync identity whose outbox is read.
    fields
        The fields shipped today (:func:`~reverse_etl.plan.resolve_fields`).
    """
    fingerprint = batch_fingerprint(destination, fields)
    cap = destination.max_batch_size
    batches = con.execute(
        f"select o.batch_key, any_value(o.operation), count(*), min(o.batch_order), "
        "min(coalesce(o.batch_position, 0)), any_value(b.fingerprint), any_value(b.created_at), "
        "count(b.batch_key) = count(*) and count(*) = any_value(b.records) "
        f"from {STATE_SCHEMA}.sync_outbox o left join {STATE_SCHEMA}.sync_outbox_batches b "
        "on b.sync_id = o.sync_id and b.batch_key = o.batch_key "
        "where o.sync_id = ? group by o.batch_key order by 4, 5, 1",
        [sync_id],
    ).fetchall()
    table = f"_cf_replay_{uuid.uuid4().hex}"
    con.execute(
        f"create temp table {table} (record_key varchar, operation varchar, record_hash varchar, record json, "
        "delivery varchar, batch_key varchar, batch_order bigint, send_seq bigint)"
    )
    if not batches:
        return ReplayPlan(con, spec, sync_id, fields, table, [], [])
    excluded: set[str] = set()
    if spec.consent_relation is not None or spec.suppress_relations:
        # Batches that would send a user who has since opted out or been suppressed.
        source = source_query(con, spec, fields)
        excluded = {
            row[0]
            for row in con.execute(
                f"select distinct o.batch_key from {STATE_SCHEMA}.sync_outbox o join ({source.select_sql}) s "
                "on s.record_key = o.record_key where o.sync_id = ? and o.operation <> 'remove' and s.excluded <> 0",
                [sync_id],
            ).fetchall()
        }
    # A record a later outbox batch also holds: that later request may have arrived, and a receiver
    # that already applied it would then apply this older one after it (and drop the later one's
    # replay as a repeat). Only a record's latest batch can go out again under its key.
    superseded = {
        row[0]
        for row in con.execute(
            f"select distinct earlier.batch_key from {STATE_SCHEMA}.sync_outbox earlier "
            f"join {STATE_SCHEMA}.sync_outbox later on later.sync_id = earlier.sync_id "
            "and later.record_key = earlier.record_key and later.batch_order > earlier.batch_order "
            "where earlier.sync_id = ?",
            [sync_id],
        ).fetchall()
    }
    planned: list[PlannedBatch] = []
    skipped: list[SkippedReplay] = []
    position = 0
    for key, op, count, order, _first, stored_fingerprint, created_at, described in batches:
        operation = Operation(op)
        reason = None
        if not described or stored_fingerprint is None:
            reason = "not whole any more (some of its records were settled), or written by an earlier version"
        elif key in superseded:
            reason = "a later outbox batch holds some of its records (only a record's latest request may go again)"
        elif stored_fingerprint != fingerprint:
            reason = "the destination's settings or the shipped fields changed since it was written"
        elif operation not in spec.sync_mode.operations:
            reason = f"mode {spec.sync_mode.value!r} does not send {operation.value} records any more"
        elif key in excluded:
            reason = "it holds a user who has since lost consent or been suppressed"
        elif cap is not None and count > cap:
            reason = f"it holds {count:,} records, more than the destination takes today ({cap:,})"
        if reason is not None:
            skipped.append(SkippedReplay(key, int(count), reason))
            continue
        con.execute(
            f"insert into {table} select record_key, operation, record_hash, record, coalesce(delivery, 'new'), batch_key, "
            f"batch_order, {position} + row_number() over (order by coalesce(batch_position, 0), record_key) "
            f"from {STATE_SCHEMA}.sync_outbox where sync_id = ? and batch_key = ?",
            [sync_id, key],
        )
        planned.append(PlannedBatch(
            sequence=len(planned) + 1, operation=operation, low=position + 1, high=position + int(count),
            key=key, replayed=True, created_at=created_at,
        ))
        position += int(count)
    return ReplayPlan(con, spec, sync_id, fields, table, planned, skipped)

