"""Planning a sync: the diff between the audience and what was last sent, in DuckDB SQL.

Each source record gets a key (the primary key as text) and a hash of its mapped fields (md5 of the
JSON of the fields, sorted by name so re-ordering a mapping resends nothing). The *audience* is the
source minus users without consent and suppressed users (when the sync declares them). A full outer
join with ``cohortflow_syncs.sync_state`` classifies every key as add / change / remove / unchanged;
two small tables refine that:

* ``sync_outbox`` — batches a killed or failed run wrote down but did not mark: the destination may
  or may not have applied them. The engine first replays every batch it can send exactly as it was
  first sent (``reverse_etl.replay``), so what is left here when a plan is made are batches that
  could not be replayed (the destination's settings changed, a record lost its consent...). A
  record's latest outbox row is what it was last possibly sent as, so the operation it needs is the
  diff's except where the diff alone would do nothing: when the acknowledged version is still
  current, an ``add`` if that row is a remove (or such an add), else a ``change`` back to the
  acknowledged values; when the record is neither in the audience nor acknowledged, a ``remove``
  with the values of its latest add / change row. Such a record is *in doubt* and goes in a normal
  batch under a new key.
* ``sync_refused`` — records the destination refused for good or skipped by its own rule: not sent
  again (*held*) while their operation and hash are the ones refused, in doubt or not (an in-doubt
  record keeps its outbox row: if it later leaves the audience, the remove is still sent); a full
  resync sends them.

The plan lives in temporary tables owned by the :class:`SyncPlan`, so batches, samples, the snapshot
and the state update all read one consistent picture even if the source changes mid-run:

* ``source`` — one copy of the audience: key, hash, fields (as one struct, so no field name can
  clash with the plan's own columns);
* ``diff`` — narrow: key, operation, flags, hash and send position;
* ``previous`` — the last-sent values of changed and removed records only;
* ``outbox`` — the latest outbox row of each record and its latest add / change values (empty
  unless the plan replays).

Keeping the wide data out of the join and the sort is what makes a 1M-record plan take about a
second rather than several.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

import duckdb
import pyarrow as pa

from reverse_etl.destinations.base import ChangeBatch, Destination, RunInfo, Snapshot
from reverse_etl.errors import SourceError, SyncSpecError
from reverse_etl.spec import Operation, SyncSpec
from reverse_etl.state import STATE_SCHEMA, ensure_state_tables, sync_identity

# Removes first: a capped destination (audience size limits) gets room before adds arrive.
SEND_ORDER: tuple[Operation, ...] = (Operation.REMOVE, Operation.CHANGE, Operation.ADD)
_OPERATION_RANK = {op: rank for rank, op in enumerate(SEND_ORDER)}
# Records read from DuckDB per query when batching: each read scans the plan's source copy, so
# small destination batches (Braze takes 75) are cut from larger reads rather than read one by one.
FETCH_SIZE = 50_000
# How many duplicate / NULL keys an error message quotes.
_BAD_KEYS_SHOWN = 3
# Length of an idempotency key: 32 hex characters = 128 bits of sha256.
KEY_LENGTH = 32

STATUS_SENT = "sent"
STATUS_REJECTED = "rejected"
STATUS_SKIPPED = "skipped"
# In the record log: an unmarked send settled by a later acknowledged operation of the record.
STATUS_SUPERSEDED = "superseded"


def quote_identifier(name: str) -> str:
    """Quote a SQL identifier for DuckDB (double quotes, inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a SQL string literal (single quotes, inner quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _is_nested(duckdb_type: str) -> bool:
    upper = duckdb_type.upper()
    return upper.endswith("]") or upper.startswith(("STRUCT", "MAP", "UNION"))


def batch_key(sync_name: str, run_id: str, sequence: int) -> str:
    """The idempotency key of batch ``sequence`` of a run: hex sha256 of the three, 32 characters.

    Deterministic (a replay recomputes nothing: the key is stored in the outbox) and unique, since
    run ids are.
    """
    text = json.dumps(["batch", sync_name, run_id, int(sequence)])
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def split_key(parent_key: str, record_keys: Sequence[str]) -> str:
    """The idempotency key of a part of a batch: derived from the parent's key and the part's records.

    Two parts get the same key only if they hold the same records of the same parent, i.e. the same
    content (within one outbox batch a record has one operation and one hash).
    """
    text = json.dumps(["part", parent_key, list(record_keys)])
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class MappedField:
    """One shipped field: destination name, source column and its DuckDB type."""

    name: str
    column: str
    duckdb_type: str


def _relation_columns(
    con: duckdb.DuckDBPyConnection, spec: SyncSpec, relation: str, parts: tuple[str, ...], what: str
) -> dict[str, str]:
    """Column name -> DuckDB type of a relation, or a SourceError naming it (and where it really is)."""
    relation_sql = ".".join(quote_identifier(p) for p in parts)
    try:
        described = con.execute(f"describe select * from {relation_sql}").fetchall()
    except duckdb.CatalogException as exc:
        table = parts[-1]
        similar = [
            row[0]
            for row in con.execute(
                "select table_schema || '.' || table_name from information_schema.tables "
                "where lower(table_name) = lower(?) order by 1",
                [table],
            ).fetchall()
        ]
        hint = f"; relations with that name: {', '.join(similar)}" if similar else " (has dbt built it?)"
        raise SourceError(f"sync {spec.name!r}: {what} {relation!r} does not exist{hint}") from exc
    return {row[0]: row[1] for row in described}


def _real_column(spec: SyncSpec, types: Mapping[str, str], relation: str, column: str, what: str) -> str:
    """The column's real name (DuckDB identifiers are case-insensitive) or a SourceError naming it."""
    by_lower = {name.lower(): name for name in types}
    found = by_lower.get(column.lower())
    if found is None:
        raise SourceError(
            f"sync {spec.name!r}: {what} column {column!r} is not in {relation!r} (columns: {', '.join(types)})"
        )
    return found


def resolve_fields(con: duckdb.DuckDBPyConnection, spec: SyncSpec) -> tuple[MappedField, ...]:
    """Check the source relation, the field mapping and the identifiers against the warehouse.

    Returns
    -------
    tuple of MappedField
        In declared order (all source columns in table order when ``spec.fields`` is ``None``),
        then one field per identifier kind not already shipped under the kind's name.

    Raises
    ------
    SourceError
        When the relation does not exist, a mapped / key / identifier column is missing from it, or an
        identifier kind's name is already shipped with another column.
    """
    types = _relation_columns(con, spec, spec.source_relation, spec.relation_parts, "source relation")
    for column in spec.primary_key:
        _real_column(spec, types, spec.source_relation, column, "primary_key")
    mapping = dict(spec.fields) if spec.fields is not None else {c: c for c in types}
    resolved = []
    for dest, src in mapping.items():
        column = _real_column(spec, types, spec.source_relation, src, f"fields[{dest!r}]")
        resolved.append(MappedField(name=dest, column=column, duckdb_type=types[column]))
    for kind, src in (spec.identifiers or {}).items():
        column = _real_column(spec, types, spec.source_relation, src, f"identifiers[{kind!r}]")
        shipped = next((f for f in resolved if f.name == kind), None)
        if shipped is None:
            resolved.append(MappedField(name=kind, column=column, duckdb_type=types[column]))
        elif shipped.column != column:
            raise SourceError(
                f"sync {spec.name!r}: identifiers[{kind!r}] is column {column!r}, but the field {kind!r} already ships "
                f"column {shipped.column!r}; map fields explicitly or point the identifier at {shipped.column!r}"
            )
    return tuple(resolved)


@dataclass(frozen=True)
class PlannedBatch:
    """One batch of a run, before it is read: its send positions and idempotency key.

    Attributes
    ----------
    sequence
        1-based position of the batch within the run.
    operation
        The batch's one operation.
    low, high
        The send positions it covers (contiguous).
    key
        Its idempotency key: the old key for a replayed batch, else :func:`batch_key`.
    replayed
        Whether it re-sends an outbox batch of an earlier run (its rows are in the outbox already).
    created_at
        When a replayed batch was first made (``None``: now).
    """

    sequence: int
    operation: Operation
    low: int
    high: int
    key: str
    replayed: bool
    created_at: datetime | None = None

    def __len__(self) -> int:
        return self.high - self.low + 1


@dataclass(frozen=True)
class MarkSpan:
    """Send positions ``low..high`` handed to the destination as one batch under ``batch_key``."""

    low: int
    high: int
    batch_key: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What the destination said about one record that it did not apply.

    ``status`` is ``rejected`` or ``skipped``; ``refused`` is true when it is for good (a permanent
    rejection or a skip), so the record is held until its data changes.
    """

    status: str
    reason: str
    refused: bool


class SyncPlan:
    """The diff for one sync, held in temporary tables of the connection (see the module docstring).

    Use as a context manager (or call :meth:`close`) to drop them. Counts are attributes;
    records are read with :meth:`sample`, :meth:`batches` and :meth:`snapshot`.

    Attributes
    ----------
    spec
        The sync planned.
    full_resync
        Whether the previous state (and earlier refusals) were ignored for adds / changes.
    adds, changes, removes, unchanged
        The whole diff, whatever the mode (in-doubt records count under the operation they are sent as).
    to_send
        Per operation, how many records this sync's mode sends.
    held
        Records not sent because the destination refused (or skipped) this very operation and data before.
    in_doubt
        Records an earlier run may have delivered without marking, whose data or operation has moved
        since: sent again in normal batches.
    excluded_consent, excluded_suppressed
        Source records left out of the audience: no consent, or (with consent) in a suppression relation.
    fields
        The shipped fields.
    sync_id
        The sync identity whose state the plan read (:func:`~reverse_etl.state.sync_identity`).
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        spec: SyncSpec,
        tables: _PlanTables,
        fields: tuple[MappedField, ...],
        counts: dict[tuple[str, bool, bool, bool], int],
        full_resync: bool,
        *,
        sync_id: str,
        excluded_consent: int = 0,
        excluded_suppressed: int = 0,
        outbox_order_base: int = 0,
    ) -> None:
        self._con = con
        self._t = tables
        self.spec = spec
        self.sync_id = sync_id
        self.full_resync = full_resync
        self.fields = fields
        self._counts = counts
        self.adds = self._count(lambda op, *_: op == Operation.ADD.value)
        self.changes = self._count(lambda op, *_: op == Operation.CHANGE.value)
        self.removes = self._count(lambda op, *_: op == Operation.REMOVE.value)
        self.unchanged = self._count(lambda op, *_: op == "unchanged")
        self.to_send: dict[Operation, int] = {
            op: self._count(lambda o, sel, *_, v=op.value: o == v and sel) for op in Operation
        }
        self.held = self._count(lambda op, sel, held, doubt: held)
        self.in_doubt = self._count(lambda op, sel, held, doubt: doubt and sel)
        self.excluded_consent = excluded_consent
        self.excluded_suppressed = excluded_suppressed
        self.outbox_order_base = outbox_order_base
        self._closed = False

    def _count(self, keep: Callable[..., bool]) -> int:
        """Records of the diff whose ``(operation, selected, held, in_doubt)`` satisfy ``keep``."""
        return sum(n for key, n in self._counts.items() if keep(*key))

    # -- counts ---------------------------------------------------------------------------------

    @property
    def rows_to_send(self) -> int:
        """Records this run will hand to the destination."""
        return sum(self.to_send.values())

    @property
    def rows_skipped(self) -> int:
        """Diff records the mode does not send (e.g. removes under ``upsert``); held records not included."""
        return self.adds + self.changes + self.removes - self.rows_to_send - self.held

    @property
    def source_rows(self) -> int:
        """Records in the audience (the source relation less exclusions)."""
        # Adds and changes (in-doubt ones included) are read from the audience; removes never are.
        return self.adds + self.changes + self.unchanged

    @property
    def snapshot_rows(self) -> int:
        """Records the destination holds once this plan is applied (see :meth:`snapshot`)."""
        kept_old = (self.changes - self.to_send[Operation.CHANGE]) + (self.removes - self.to_send[Operation.REMOVE])
        return self.unchanged + self.to_send[Operation.ADD] + self.to_send[Operation.CHANGE] + kept_old

    @property
    def field_names(self) -> tuple[str, ...]:
        """Destination field names in declared order."""
        return tuple(f.name for f in self.fields)

    @property
    def primary_key_fields(self) -> tuple[str, ...]:
        """Destination fields carrying the primary key, in key order."""
        out = []
        for column in self.spec.primary_key:
            out.append(next(f.name for f in self.fields if f.column.lower() == column.lower()))
        return tuple(out)

    def summary(self) -> str:
        """One line: the diff, what the mode sends, and what was held back or left out."""
        sent = ", ".join(f"{op.value} {self.to_send[op]:,}" for op in SEND_ORDER if op in self.spec.sync_mode.operations)
        line = (
            f"sync {self.spec.name!r} ({self.spec.sync_mode.value}{', full resync' if self.full_resync else ''}): "
            f"{self.adds:,} to add, {self.changes:,} changed, {self.removes:,} to remove, {self.unchanged:,} unchanged; "
            f"sends {sent or 'nothing'}"
        )
        extra = []
        if self.in_doubt:
            extra.append(f"{self.in_doubt:,} in doubt re-sent")
        if self.held:
            extra.append(f"{self.held:,} held (refused before, unchanged)")
        if self.spec.consent_relation is not None:
            extra.append(f"{self.excluded_consent:,} excluded without consent")
        if self.spec.suppress_relations:
            extra.append(f"{self.excluded_suppressed:,} suppressed")
        return line + ("; " + ", ".join(extra) if extra else "")

    # -- reading records --------------------------------------------------------------------------

    def _struct_type(self) -> str:
        """The DuckDB STRUCT type of a record (fields sorted by name, like ``source.fields``)."""
        return struct_type(self.fields)

    def _unpack(self, rec: str, *, flat: bool = False) -> str:
        """Select list turning the struct column ``rec`` into one column per field.

        Fields live in a struct inside the plan table so that no field name can collide with the
        plan's own columns (``record_key``, ``operation``...).
        """
        cols = []
        for f in self.fields:
            ident = quote_identifier(f.name)
            value = f"{rec}.{ident}"
            cols.append(f"to_json({value})::varchar as {ident}" if flat and _is_nested(f.duckdb_type) else f"{value} as {ident}")
        return ", ".join(cols)

    def _records_query(self, operation: Operation, where: str) -> str:
        """``_cf_record_key`` + one column per field; removes carry the values last sent.

        ``where`` filters the diff table, aliased ``d``.
        """
        t = self._t
        if operation is Operation.REMOVE:
            rec, joined = f"v.previous_record::{self._struct_type()}", f"{t.previous} v on v.record_key = d.record_key"
        else:
            rec, joined = "s.fields", f"{t.source} s on s.record_key = d.record_key"
        return (
            f"select x.record_key as _cf_record_key, {self._unpack('x.rec')} from ("
            f"select d.record_key, d.send_seq, {rec} as rec from {t.diff} d join {joined} "
            f"where d.operation = {quote_literal(operation.value)} and {where}) as x"
        )

    def _window_query(self, low: int, high: int) -> str:
        """Records at send positions ``low..high``, any operation, in send order."""
        t = self._t
        rec = f"case when d.operation = 'remove' then v.previous_record::{self._struct_type()} else s.fields end"
        return (
            f"select x.record_key as _cf_record_key, {self._unpack('x.rec')} from ("
            f"select d.record_key, d.send_seq, {rec} as rec from "
            f"(select record_key, send_seq, operation from {t.diff} where send_seq between {int(low)} and {int(high)}) d "
            f"left join {t.source} s on s.record_key = d.record_key "
            f"left join {t.previous} v on v.record_key = d.record_key) as x order by x.send_seq"
        )

    def sample_keys(self, operation: Operation | str, limit: int = 5, *, sent_only: bool = False) -> list[str]:
        """Up to ``limit`` keys of the diff with this operation (``unchanged`` allowed), sorted.

        ``sent_only`` keeps the records this run sends (not those the mode leaves or that are held).
        """
        op = operation.value if isinstance(operation, Operation) else str(operation)
        selected = " and is_selected" if sent_only else ""
        rows = self._con.execute(
            f"select record_key from {self._t.diff} where operation = ?{selected} order by record_key limit ?", [op, limit]
        ).fetchall()
        return [r[0] for r in rows]

    def sample(self, operation: Operation | str, limit: int = 5) -> list[dict[str, object]]:
        """Up to ``limit`` records of the diff with this operation (field -> value), sorted by key.

        For removes the values are those last sent.
        """
        op = Operation(operation)
        query = self._records_query(op, "true") + f" order by _cf_record_key limit {int(limit)}"
        return self._con.sql(query).to_arrow_table().remove_column(0).to_pylist()

    def batch_plan(
        self,
        batch_size: int | None = None,
        *,
        run_id: str | None = None,
        operations: Iterable[Operation] | None = None,
        created_at: datetime | None = None,
    ) -> list[PlannedBatch]:
        """The batches of this run, in send order, before reading any record.

        Removes, changes and adds cut into ``batch_size``.

        Parameters
        ----------
        batch_size
            Records per new batch; default ``spec.batch_size``.
        run_id
            The run, to derive new batches' idempotency keys (:func:`batch_key`); without it they are ``""``.
        operations
            Restrict to these operations (default: all that the mode sends).
        created_at
            The batches' creation time (the run's start), carried by every batch and its replays.
        """
        size = batch_size or self.spec.batch_size
        wanted = set(operations) if operations is not None else set(Operation)
        out: list[PlannedBatch] = []
        for op, (low, high) in self._send_ranges().items():
            if op not in wanted:
                continue
            for start in range(low, high + 1, size):
                sequence = len(out) + 1
                key = batch_key(self.spec.name, run_id, sequence) if run_id else ""
                out.append(PlannedBatch(sequence, op, start, min(start + size - 1, high), key, False, created_at))
        return out

    def read_batches(
        self, planned: Sequence[PlannedBatch], *, fetch_size: int = FETCH_SIZE
    ) -> Iterator[tuple[PlannedBatch, ChangeBatch]]:
        """Read the records of planned batches, in larger reads (``fetch_size`` records or one batch).

        Each read is fully fetched before its batches are yielded, so the caller may write to the
        warehouse (mark batches, write the outbox) between batches.
        """
        yield from read_planned_batches(self._con, planned, self._window_query, fetch_size=fetch_size)

    def batches(
        self,
        batch_size: int | None = None,
        operations: Iterable[Operation] | None = None,
        *,
        fetch_size: int = FETCH_SIZE,
        run_id: str | None = None,
    ) -> Iterator[ChangeBatch]:
        """Yield the records the mode sends, one operation per batch: removes, changes, adds.

        Batches come in send order and cover the send positions without gaps, so batch after
        batch the positions run 1, 2, ... ``rows_to_send``. Records are read from DuckDB in
        chunks of ``fetch_size`` and fully read before a batch is yielded, so the caller may write
        to the warehouse (mark a batch as sent) between batches.

        Parameters
        ----------
        batch_size
            Records per batch; default ``spec.batch_size``.
        operations
            Restrict to these operations (default: all that the mode sends).
        fetch_size
            Records per read from DuckDB (at least one batch).
        run_id
            Derive the batches' idempotency keys for this run (see :meth:`batch_plan`).
        """
        planned = self.batch_plan(batch_size, run_id=run_id, operations=operations)
        for _, batch in self.read_batches(planned, fetch_size=fetch_size):
            yield batch

    def _send_ranges(self) -> dict[Operation, tuple[int, int]]:
        """``send_seq`` range per operation of the records sent."""
        rows = self._con.execute(
            f"select operation, min(send_seq), max(send_seq) from {self._t.diff} where is_selected group by 1"
        ).fetchall()
        by_op = {Operation(op): (int(low), int(high)) for op, low, high in rows}
        return {op: by_op[op] for op in SEND_ORDER if op in by_op}

    def send_range(self, operation: Operation) -> tuple[int, int] | None:
        """The ``send_seq`` range of one operation's new batches, or ``None`` when the mode sends none of it."""
        return self._send_ranges().get(operation)

    def snapshot(self, run: RunInfo, *, flat_columns: bool = False, rows_per_batch: int | None = None) -> Snapshot:
        """The audience as it stands once this plan is applied, for snapshot destinations.

        That is the state after this run: for ``mirror`` exactly the audience; for ``upsert`` the
        audience plus records that left it (they were never removed); for ``insert_only`` /
        ``update_only`` changes or adds that the mode does not send keep their previous form or stay out.

        Parameters
        ----------
        run
            The run the snapshot is written for.
        flat_columns
            Render list / struct / map fields as JSON text (for CSV).
        rows_per_batch
            Arrow batch size of the stream; default ``spec.batch_size``.
        """
        struct, t = self._struct_type(), self._t
        current = (
            f"select s.fields as rec from {t.source} s join {t.diff} d on d.record_key = s.record_key "
            "where d.operation = 'unchanged' or (d.operation in ('add', 'change') and d.is_selected)"
        )
        # Records the mode leaves in place keep the form they were last sent in.
        previous = (
            f"select v.previous_record::{struct} as rec from {t.previous} v join {t.diff} d on d.record_key = v.record_key "
            "where not d.is_selected"
        )
        order = ", ".join(f"a.rec.{quote_identifier(name)}" for name in self.primary_key_fields)
        query = f"select {self._unpack('a.rec', flat=flat_columns)} from ({current} union all {previous}) as a order by {order}"
        size = rows_per_batch or self.spec.batch_size
        schema = self._con.sql(query + " limit 0").to_arrow_table().schema

        def open_reader() -> pa.RecordBatchReader:
            return self._con.sql(query).to_arrow_reader(size)

        def read_changes() -> pa.Table:
            return self._con.sql(
                f"select operation, record_key from {self._t.diff} where is_selected order by send_seq"
            ).to_arrow_table()

        return Snapshot(
            run=run,
            row_count=self.snapshot_rows,
            rows_added=self.to_send[Operation.ADD],
            rows_changed=self.to_send[Operation.CHANGE],
            rows_removed=self.to_send[Operation.REMOVE],
            schema=schema,
            _open_reader=open_reader,
            _read_changes=read_changes,
        )

    # -- writing the outbox and the state --------------------------------------------------------------

    def write_outbox(
        self,
        *,
        run_id: str,
        batches: Sequence[PlannedBatch],
        written_at: datetime,
        created_at: datetime,
        fingerprint: str,
    ) -> int:
        """Write new (not replayed) batches to the outbox before they are sent.

        Every record is written with the values it is sent with (a remove: the values it carries)
        and its place in the batch, and every batch with its creation time and the fingerprint of
        the destination settings and fields it is encoded for: a later run can then rebuild the
        batch exactly (:mod:`reverse_etl.replay`). Runs inside the caller's transaction. Returns the
        number of record rows written.
        """
        new = [b for b in batches if not b.replayed]
        if not new:
            return 0
        spans = pa.table({
            "low": pa.array([b.low for b in new], pa.int64()),
            "high": pa.array([b.high for b in new], pa.int64()),
            "batch_key": pa.array([b.key for b in new], pa.string()),
            "batch_seq": pa.array([b.sequence for b in new], pa.int32()),
            "operation": pa.array([b.operation.value for b in new], pa.string()),
            "records": pa.array([len(b) for b in new], pa.int32()),
        })
        name = f"_cf_outbox_spans_{uuid.uuid4().hex}"
        self._con.register(name, spans)
        t = self._t
        order = int(self.outbox_order_base)
        try:
            self._con.execute(
                f"insert into {STATE_SCHEMA}.sync_outbox (sync_id, sync_name, run_id, batch_key, batch_seq, batch_order, "
                "operation, record_key, record_hash, record, written_at, delivery, batch_position) "
                f"select ?, ?, ?, sp.batch_key, sp.batch_seq, {order} + sp.batch_seq, d.operation, d.record_key, "
                "d.record_hash, case when d.operation <> 'remove' then to_json(s.fields) else v.previous_record end, ?, "
                "d.delivery, d.send_seq - sp.low "
                f"from (select * from {t.diff} where send_seq between {min(b.low for b in new)} and {max(b.high for b in new)}) d "
                f"asof join {name} sp on d.send_seq >= sp.low "
                f"left join {t.source} s on s.record_key = d.record_key "
                f"left join {t.previous} v on v.record_key = d.record_key and d.operation = 'remove' "
                "where d.send_seq <= sp.high",
                [self.sync_id, self.spec.name, run_id, written_at],
            )
            self._con.execute(
                f"insert into {STATE_SCHEMA}.sync_outbox_batches (sync_id, sync_name, batch_key, operation, batch_order, "
                f"created_at, fingerprint, records) select ?, ?, batch_key, operation, {order} + batch_seq, ?, ?, records "
                f"from {name}",
                [self.sync_id, self.spec.name, created_at, fingerprint],
            )
        finally:
            self._con.unregister(name)
        return sum(len(b) for b in new)

    def relabel_outbox(self, *, old_key: str, new_key: str, low: int, high: int) -> None:
        """Move the outbox rows of send positions ``low..high`` from batch ``old_key`` to ``new_key``.

        Called (and committed) before a part of a split batch is sent under its own key, so that a
        replay after a crash re-sends that part, exactly, under that key.
        """
        relabel_outbox_rows(
            self._con, self.sync_id, old_key, new_key,
            f"select record_key from {self._t.diff} where send_seq between {int(low)} and {int(high)}",
        )

    def mark(
        self,
        *,
        run_id: str,
        sent_at: datetime,
        spans: Sequence[MarkSpan],
        outcomes: Mapping[str, Outcome] | None = None,
    ) -> dict[tuple[str, str, bool], int]:
        """Record what the destination answered for send positions covered by ``spans``.

        Every record of the spans is acknowledged except those in ``outcomes``. Acknowledged records
        move ``sync_state`` forward (removes leave it) and clear their earlier refusals and all their
        outbox rows; records refused for good (``Outcome.refused``) are written to ``sync_refused``;
        every record gets a ``sync_records`` row (``sent`` / ``rejected`` / ``skipped``, with the reason)
        and the outbox row of its batch is deleted. Runs inside the caller's transaction, so the mark,
        the outbox deletion and the run's counters commit together.

        Returns
        -------
        dict
            ``(operation, status, refused) -> records``.
        """
        t = self._t
        return mark_spans(
            self._con, sync_id=self.sync_id, sync_name=self.spec.name, run_id=run_id, sent_at=sent_at,
            spans=spans, outcomes=outcomes or {},
            positions_sql=f"select record_key, operation, record_hash, send_seq, delivery, false as replayed, "
            f"null::bigint as batch_order from {t.diff}",
            values_sql=f"select record_key, to_json(fields) as record from {t.source}",
        )

    def forget_outbox(self) -> None:
        """Delete every outbox row of the sync (after a snapshot destination received the whole audience)."""
        for table in ("sync_outbox", "sync_outbox_batches"):
            self._con.execute(f"delete from {STATE_SCHEMA}.{table} where sync_id = ?", [self.sync_id])

    def forget_stale_refusals(self) -> None:
        """Delete refusals of records neither in the audience nor in the state (they will never be planned)."""
        self._con.execute(
            f"delete from {STATE_SCHEMA}.sync_refused r where r.sync_id = ? "
            f"and not exists (select 1 from {self._t.diff} d where d.record_key = r.record_key)",
            [self.sync_id],
        )

    # -- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the plan's temporary tables (idempotent)."""
        if not self._closed:
            self._t.drop(self._con)
            self._closed = True

    def __enter__(self) -> SyncPlan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def read_planned_batches(
    con: duckdb.DuckDBPyConnection,
    planned: Sequence[PlannedBatch],
    window_query: Callable[[int, int], str],
    *,
    fetch_size: int = FETCH_SIZE,
) -> Iterator[tuple[PlannedBatch, ChangeBatch]]:
    """Read planned batches in larger reads and cut them into :class:`ChangeBatch` es.

    ``window_query(low, high)`` selects ``_cf_record_key`` and the fields of send positions
    ``low..high`` in send order. One read covers contiguous positions (a filtered plan may leave
    gaps) up to ``fetch_size`` records, or one batch; it is fetched whole before its batches are
    yielded, so the caller may write to the warehouse between batches.
    """
    index = 0
    while index < len(planned):
        window = [planned[index]]
        records = len(planned[index])
        while index + len(window) < len(planned):
            following = planned[index + len(window)]
            if following.low != window[-1].high + 1 or records + len(following) > fetch_size:
                break
            records += len(following)
            window.append(following)
        index += len(window)
        chunk = con.sql(window_query(window[0].low, window[-1].high)).to_arrow_table()
        offset = 0
        for pb in window:
            part = chunk.slice(offset, len(pb))
            offset += len(pb)
            yield pb, ChangeBatch(
                operation=pb.operation, sequence=pb.sequence, keys=tuple(part.column(0).to_pylist()),
                records=part.remove_column(0), idempotency_key=pb.key, created_at=pb.created_at,
            )


def relabel_outbox_rows(con: duckdb.DuckDBPyConnection, sync_id: str, old_key: str, new_key: str, keys_sql: str) -> None:
    """Move the outbox rows of the records ``keys_sql`` selects from batch ``old_key`` to ``new_key``.

    The new batch inherits the old one's creation time, order and fingerprint: it is a part of it.
    """
    con.execute(
        f"update {STATE_SCHEMA}.sync_outbox set batch_key = ? where sync_id = ? and batch_key = ? "
        f"and record_key in ({keys_sql})",
        [new_key, sync_id, old_key],
    )
    con.execute(
        f"insert into {STATE_SCHEMA}.sync_outbox_batches (sync_id, sync_name, batch_key, operation, batch_order, created_at, "
        f"fingerprint, records) select sync_id, sync_name, ?, operation, batch_order, created_at, fingerprint, "
        f"(select count(*) from {STATE_SCHEMA}.sync_outbox where sync_id = ? and batch_key = ?) "
        f"from {STATE_SCHEMA}.sync_outbox_batches where sync_id = ? and batch_key = ?",
        [new_key, sync_id, new_key, sync_id, old_key],
    )
    # What is left of the parent is a batch of its own now (the other part).
    con.execute(
        f"update {STATE_SCHEMA}.sync_outbox_batches set records = "
        f"(select count(*) from {STATE_SCHEMA}.sync_outbox where sync_id = ? and batch_key = ?) "
        "where sync_id = ? and batch_key = ?",
        [sync_id, old_key, sync_id, old_key],
    )


def mark_spans(
    con: duckdb.DuckDBPyConnection,
    *,
    sync_id: str,
    sync_name: str,
    run_id: str,
    sent_at: datetime,
    spans: Sequence[MarkSpan],
    outcomes: Mapping[str, Outcome],
    positions_sql: str,
    values_sql: str,
) -> dict[tuple[str, str, bool], int]:
    """Record the destination's answers for the send positions covered by ``spans`` (see :meth:`SyncPlan.mark`).

    Parameters
    ----------
    positions_sql
        The plan's positions: ``record_key, operation, record_hash, send_seq, delivery, replayed,
        batch_order`` (``batch_order`` of a replayed outbox batch, else NULL).
    values_sql
        ``record_key, record`` (JSON): the values acknowledged adds and changes were sent with.

    Returns
    -------
    dict
        ``(operation, status, refused) -> records``.
    """
    if not spans:
        return {}
    suffix = uuid.uuid4().hex
    spans_table, outcome_table, marked = f"_cf_mark_spans_{suffix}", f"_cf_mark_outcomes_{suffix}", f"_cf_marked_{suffix}"
    ordered = sorted(spans, key=lambda s: s.low)
    con.register(spans_table, pa.table({
        "low": pa.array([s.low for s in ordered], pa.int64()),
        "high": pa.array([s.high for s in ordered], pa.int64()),
        "batch_key": pa.array([s.batch_key for s in ordered], pa.string()),
    }))
    con.register(outcome_table, pa.table({
        "record_key": pa.array(list(outcomes), pa.string()),
        "status": pa.array([o.status for o in outcomes.values()], pa.string()),
        "reason": pa.array([o.reason for o in outcomes.values()], pa.string()),
        "refused": pa.array([o.refused for o in outcomes.values()], pa.bool_()),
    }))
    state, outbox = f"{STATE_SCHEMA}.sync_state", f"{STATE_SCHEMA}.sync_outbox"
    try:
        con.execute(
            f"create temp table {marked} as select d.record_key, d.operation, d.record_hash, sp.batch_key, "
            "o.status, o.reason, coalesce(o.refused, false) as refused, d.delivery, d.replayed, d.batch_order "
            f"from (select * from ({positions_sql}) where send_seq between {ordered[0].low} and {max(s.high for s in ordered)}) d "
            f"asof join {spans_table} sp on d.send_seq >= sp.low "
            f"left join {outcome_table} o on o.record_key = d.record_key "
            "where d.send_seq <= sp.high"
        )
        acked = f"select record_key from {marked} where status is null"
        con.execute(f"delete from {state} where sync_id = ? and record_key in ({acked})", [sync_id])
        con.execute(
            f"insert into {state} (sync_id, sync_name, record_key, record_hash, record, sent_at, run_id) "
            f"select ?, ?, m.record_key, m.record_hash, v.record, ?, ? from {marked} m "
            f"join ({values_sql}) v on v.record_key = m.record_key where m.status is null and m.operation in ('add', 'change')",
            [sync_id, sync_name, sent_at, run_id],
        )
        con.execute(
            f"insert into {STATE_SCHEMA}.sync_records (sync_id, run_id, sync_name, record_key, operation, status, reason, "
            "record_hash, batch_key, recorded_at, delivery, replayed) "
            f"select ?, ?, ?, record_key, operation, coalesce(status, 'sent'), reason, record_hash, batch_key, ?, delivery, "
            f"replayed from {marked}",
            [sync_id, run_id, sync_name, sent_at],
        )
        con.execute(
            f"delete from {STATE_SCHEMA}.sync_refused where sync_id = ? and record_key in (select record_key from {marked})",
            [sync_id],
        )
        con.execute(
            f"insert into {STATE_SCHEMA}.sync_refused (sync_id, sync_name, record_key, operation, record_hash, status, reason, "
            f"run_id, refused_at) select ?, ?, record_key, operation, record_hash, status, reason, ?, ? from {marked} where refused",
            [sync_id, sync_name, run_id, sent_at],
        )
        # Earlier outbox rows an acknowledgement settles were sent (or written to be sent) by a run
        # that stopped before their answer: they go to the record log as 'superseded', so that "what
        # happened to user X" still shows a send that may have arrived (with its delivery reason).
        con.execute(
            f"insert into {STATE_SCHEMA}.sync_records (sync_id, run_id, sync_name, record_key, operation, status, reason, "
            "record_hash, batch_key, recorded_at, delivery, replayed) "
            f"select o.sync_id, o.run_id, o.sync_name, o.record_key, o.operation, '{STATUS_SUPERSEDED}', "
            "'its run stopped before the answer; a later operation of the record was acknowledged', "
            f"o.record_hash, o.batch_key, ?, coalesce(o.delivery, 'new'), false from {outbox} o join {marked} m "
            "on o.record_key = m.record_key where o.sync_id = ? and m.status is null and o.batch_key <> m.batch_key "
            "and (m.batch_order is null or o.batch_order <= m.batch_order)",
            [sent_at, sync_id],
        )
        # Acknowledged: every outbox row of the record up to this batch is settled (the destination
        # holds this version; a replayed batch leaves the record's later batches to be replayed).
        # Not applied: only this batch's row, and (refused for good) the rows of the same operation
        # and data, which the destination would refuse the same way.
        con.execute(
            f"delete from {outbox} o using {marked} m where o.sync_id = ? and o.record_key = m.record_key "
            "and ((m.status is null and (m.batch_order is null or o.batch_order <= m.batch_order)) "
            "or o.batch_key = m.batch_key "
            "or (m.refused and o.operation = m.operation and o.record_hash = m.record_hash))",
            [sync_id],
        )
        con.execute(
            f"delete from {STATE_SCHEMA}.sync_outbox_batches b where b.sync_id = ? and not exists "
            f"(select 1 from {outbox} o where o.sync_id = b.sync_id and o.batch_key = b.batch_key)",
            [sync_id],
        )
        rows = con.execute(f"select operation, coalesce(status, 'sent'), refused, count(*) from {marked} group by all").fetchall()
    finally:
        con.execute(f"drop table if exists {marked}")
        con.unregister(spans_table)
        con.unregister(outcome_table)
    return {(op, status, bool(refused)): int(n) for op, status, refused, n in rows}


def _audience_filter(
    con: duckdb.DuckDBPyConnection, spec: SyncSpec, source_types: Mapping[str, str]
) -> tuple[str, str] | None:
    """Joins and an ``excluded`` expression (0 in the audience, 1 no consent, 2 suppressed), or None.

    Consent: the user's rows in ``consent_relation`` (matched on ``user_id``) must all say true
    (NULL, false, a value that is not a boolean, or no row at all = no consent). Suppression: any
    row with the user's id in any ``suppress_relations``. Ids are compared as text.

    Raises
    ------
    SourceError
        When a relation or column is missing (named).
    """
    if spec.consent_relation is None and not spec.suppress_relations:
        return None
    user_column = _real_column(spec, source_types, spec.source_relation, spec.user_column, "user_column")
    user = f"cast(r.{quote_identifier(user_column)} as varchar)"
    joins, excluded = [], "0"
    if spec.consent_relation is not None:
        parts = tuple(spec.consent_relation.split("."))
        types = _relation_columns(con, spec, spec.consent_relation, parts, "consent_relation")
        uid = _real_column(spec, types, spec.consent_relation, "user_id", "consent_relation user_id")
        flag = _real_column(spec, types, spec.consent_relation, spec.consent_column, "consent_column")
        relation_sql = ".".join(quote_identifier(p) for p in parts)
        joins.append(
            f"left join (select cast({quote_identifier(uid)} as varchar) as uid from {relation_sql} group by 1 "
            f"having bool_and(coalesce(try_cast({quote_identifier(flag)} as boolean), false))) _cf_consent "
            f"on _cf_consent.uid = {user}"
        )
        excluded = "case when _cf_consent.uid is null then 1 else 0 end"
    if spec.suppress_relations:
        selects = []
        for relation in spec.suppress_relations:
            parts = tuple(relation.split("."))
            types = _relation_columns(con, spec, relation, parts, "suppress_relations entry")
            uid = _real_column(spec, types, relation, "user_id", "suppress_relations user_id")
            selects.append(
                f"select cast({quote_identifier(uid)} as varchar) as uid from {'.'.join(quote_identifier(p) for p in parts)}"
            )
        joins.append(
            f"left join (select distinct uid from ({' union all '.join(selects)}) where uid is not null) _cf_suppressed "
            f"on _cf_suppressed.uid = {user}"
        )
        excluded = f"case when ({excluded}) = 1 then 1 when _cf_suppressed.uid is not null then 2 else 0 end"
    return " ".join(joins), excluded


@dataclass(frozen=True)
class SourceQuery:
    """SQL reading a sync's source: one row per record with its key and whether it is in the audience.

    Attributes
    ----------
    select_sql
        ``record_key, key_is_null, fields`` (a struct, fields sorted by name) and ``excluded``
        (0 in the audience, 1 no consent, 2 suppressed).
    null_example_sql
        The key values of one row whose key is NULL (for the error message).
    filters_audience
        Whether the sync declares consent or suppression at all.
    """

    select_sql: str
    null_example_sql: str
    filters_audience: bool


def source_query(con: duckdb.DuckDBPyConnection, spec: SyncSpec, fields: tuple[MappedField, ...]) -> SourceQuery:
    """The query the plan reads the source with (see :class:`SourceQuery`).

    Raises
    ------
    SourceError
        When a consent or suppression relation or column is missing.
    """
    source_types = _relation_columns(con, spec, spec.source_relation, spec.relation_parts, "source relation")
    audience = _audience_filter(con, spec, source_types)
    key_fields = [next(f for f in fields if f.column.lower() == c.lower()) for c in spec.primary_key]
    # (every key column is shipped: SyncSpec checks it for explicit fields, and None ships all columns)
    relation_sql = ".".join(quote_identifier(p) for p in spec.relation_parts)

    def col(f: MappedField) -> str:
        return f"r.{quote_identifier(f.column)}"

    if len(key_fields) == 1:
        key_expr = f"cast({col(key_fields[0])} as varchar)"
    else:
        # A JSON array of strings: unambiguous whatever characters the parts contain.
        key_expr = "to_json([" + ", ".join(f"cast({col(f)} as varchar)" for f in key_fields) + "])::varchar"
    # Fields sorted by name: to_json(fields) is then the hashed and stored form, and a re-ordered
    # mapping is not a change. Field names and values are both hashed.
    fields_expr = "{" + ", ".join(f"{quote_literal(f.name)}: {col(f)}" for f in sorted(fields, key=lambda f: f.name)) + "}"
    any_key_null = " or ".join(f"{col(f)} is null" for f in key_fields)
    key_values = "[" + ", ".join(f"cast({col(f)} as varchar)" for f in key_fields) + "]"
    joins, excluded = audience if audience else ("", "0")
    return SourceQuery(
        select_sql=(
            f"select {key_expr} as record_key, ({any_key_null}) as key_is_null, {fields_expr} as fields, "
            f"{excluded} as excluded from {relation_sql} r {joins}"
        ),
        null_example_sql=f"select {key_values} from {relation_sql} r where {any_key_null} limit 1",
        filters_audience=audience is not None,
    )


def plan_sync(
    con: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    *,
    destination: Destination | None = None,
    full_resync: bool = False,
    replay: bool = True,
) -> SyncPlan:
    """Compute the diff between the audience of ``spec.source_relation`` and what the sync last sent.

    Parameters
    ----------
    con
        A writable connection to the warehouse (the state schema is created if missing).
    spec
        The sync.
    destination
        Where the sync ships: the state read is that of this sync *at this destination*
        (:func:`~reverse_etl.state.sync_identity`). ``None`` plans against the state of a preview
        that never ran (everything is an add).
    full_resync
        Ignore what was sent and refused before: every audience record is an add. Records sent
        before but gone from the audience are still removes (a mirror only deletes what it sent).
    replay
        Take the outbox into account (in-doubt records: batches an earlier run left that could not
        be replayed exactly). Record destinations need it; a snapshot destination, which receives
        the whole audience, does not.

    Returns
    -------
    SyncPlan
        Counts, samples and batches; close it (or use ``with``) when done.

    Raises
    ------
    SourceError
        Missing relation or column (source, consent, suppression), or a primary key that is NULL or
        not unique (names a bad key).
    """
    if not isinstance(spec, SyncSpec):
        raise SyncSpecError(f"plan_sync needs a SyncSpec, got {type(spec).__name__}")
    ensure_state_tables(con)
    sync_id = sync_identity(spec.name, destination.location if destination is not None else None)
    fields = resolve_fields(con, spec)
    source = source_query(con, spec, fields)

    tables = _PlanTables.new()
    try:
        con.execute(
            f"create temp table {tables.source} as select record_key, key_is_null, md5(to_json(fields)) as record_hash, fields, "
            f"excluded from ({source.select_sql})"
        )
        _check_key(con, spec, tables.source, source.null_example_sql)
        excluded_consent = excluded_suppressed = 0
        if source.filters_audience:
            for kind, n in con.execute(
                f"select excluded, count(*) from {tables.source} where excluded <> 0 group by 1"
            ).fetchall():
                if kind == 1:
                    excluded_consent = int(n)
                else:
                    excluded_suppressed = int(n)
            if excluded_consent or excluded_suppressed:
                con.execute(f"delete from {tables.source} where excluded <> 0")

        outbox_order_base = 0
        if replay:
            # Per record: its latest outbox row (what it was last possibly sent as) and its latest
            # add / change row (the values it may be held with, to remove it should it leave).
            con.execute(
                f"""
                create temp table {tables.outbox} as
                with rows as (select * from {STATE_SCHEMA}.sync_outbox where sync_id = ?),
                latest as (
                    select record_key, operation, record_hash from rows
                    qualify row_number() over (partition by record_key order by batch_order desc, batch_key desc) = 1
                ),
                puts as (
                    select record_key, record_hash as put_hash, record as put_record from rows where operation <> 'remove'
                    qualify row_number() over (partition by record_key order by batch_order desc, batch_key desc) = 1
                )
                select l.*, p.put_hash, p.put_record from latest l left join puts p using (record_key)
                """,
                [sync_id],
            )
            row = con.execute(
                f"select coalesce(max(batch_order), 0) from {STATE_SCHEMA}.sync_outbox where sync_id = ?", [sync_id]
            ).fetchone()
            outbox_order_base = int(row[0]) if row else 0
        else:
            con.execute(
                f"create temp table {tables.outbox} (record_key varchar, operation varchar, record_hash varchar, "
                "put_hash varchar, put_record json)"
            )
        has_outbox = replay and bool(con.execute(f"select count(*) from {tables.outbox}").fetchone()[0])  # type: ignore[index]

        # A full resync sends refused records again: no refusal is read.
        has_refusals = not full_resync and bool(con.execute(
            f"select count(*) from {STATE_SCHEMA}.sync_refused where sync_id = ?", [sync_id]
        ).fetchone()[0])  # type: ignore[index]
        ignore_state = "true" if full_resync else "false"
        mode_ops = ", ".join(quote_literal(op.value) for op in spec.sync_mode.operations)
        rank = "case operation " + " ".join(f"when {quote_literal(op.value)} then {r}" for op, r in _OPERATION_RANK.items()) + " end"
        base = f"""
            select
                coalesce(s.record_key, t.record_key) as record_key,
                case
                    when s.record_key is null then 'remove'
                    when t.record_key is null or {ignore_state} then 'add'
                    when s.record_hash <> t.record_hash then 'change'
                    else 'unchanged'
                end as base_op,
                coalesce(s.record_hash, t.record_hash) as cur_hash
            from (select record_key, record_hash from {tables.source}) s
            full outer join state t on s.record_key = t.record_key
        """
        if has_outbox:
            # See the module docstring: the operation a record needs, given that its latest outbox
            # row may or may not have been applied; such a record is sent anew, in doubt.
            classified = f"""
                select
                    coalesce(b.record_key, o.record_key) as record_key,
                    case
                        when o.record_key is null then b.base_op
                        -- neither in the audience nor acknowledged: remove what may have arrived
                        when b.base_op is null then case when o.put_hash is not null then 'remove' end
                        -- what was acknowledged is current, but a later operation may have arrived
                        when b.base_op = 'unchanged' then case when o.operation in ('remove', 'add') then 'add' else 'change' end
                        else b.base_op
                    end as operation,
                    case when b.base_op is null then o.put_hash else b.cur_hash end as record_hash,
                    b.base_op is null as prev_from_outbox,
                    o.record_key is not null as in_doubt
                from ({base}) b full outer join {tables.outbox} o on o.record_key = b.record_key
            """
        else:
            classified = f"""
                select record_key, base_op as operation, cur_hash as record_hash,
                       false as prev_from_outbox, false as in_doubt
                from ({base}) b
            """
        if has_refusals:
            flagged = f"""
                select c.*,
                    coalesce(r.operation = c.operation and r.record_hash = c.record_hash, false) as held
                from classified c
                left join (select record_key, operation, record_hash from {STATE_SCHEMA}.sync_refused
                           where sync_id = {quote_literal(sync_id)}) r on r.record_key = c.record_key
                where c.operation is not null
            """
        else:
            flagged = "select *, false as held from classified where operation is not null"
        con.execute(
            f"""
            create temp table {tables.diff} as
            with state as (
                select record_key, record_hash from {STATE_SCHEMA}.sync_state where sync_id = ?
            ),
            classified as ({classified}),
            flagged as ({flagged}),
            selected as (
                select *, operation in ({mode_ops}) and not held as is_selected from flagged
            )
            select
                record_key, operation, is_selected, held, in_doubt, record_hash, prev_from_outbox,
                case when in_doubt then 'in_doubt' else 'new' end as delivery,
                case when is_selected then row_number() over (partition by is_selected order by {rank}, record_key) end as send_seq
            from selected
            """,
            [sync_id],
        )
        con.execute(
            f"create temp table {tables.previous} as "
            f"select t.record_key, t.record as previous_record from {STATE_SCHEMA}.sync_state t "
            f"join {tables.diff} d on d.record_key = t.record_key "
            f"where t.sync_id = ? and d.operation in ('change', 'remove') and not d.prev_from_outbox "
            f"union all select o.record_key, o.put_record from {tables.outbox} o join {tables.diff} d on d.record_key = o.record_key "
            "where d.prev_from_outbox",
            [sync_id],
        )
        counts = {
            (op, bool(sel), bool(held), bool(doubt)): int(n)
            for op, sel, held, doubt, n in con.execute(
                f"select operation, is_selected, held, in_doubt, count(*) from {tables.diff} group by all"
            ).fetchall()
        }
    except BaseException:
        tables.drop(con)
        raise
    return SyncPlan(
        con, spec, tables, fields, counts, full_resync, sync_id=sync_id,
        excluded_consent=excluded_consent, excluded_suppressed=excluded_suppressed, outbox_order_base=outbox_order_base,
    )


@dataclass(frozen=True)
class _PlanTables:
    """Names of a plan's temporary tables (unique per plan; temp tables are per connection)."""

    source: str
    diff: str
    previous: str
    outbox: str

    @classmethod
    def new(cls) -> _PlanTables:
        suffix = uuid.uuid4().hex
        return cls(f"_cf_source_{suffix}", f"_cf_diff_{suffix}", f"_cf_previous_{suffix}", f"_cf_outbox_{suffix}")

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        for table in (self.source, self.diff, self.previous, self.outbox):
            con.execute(f"drop table if exists {table}")


def struct_type(fields: tuple[MappedField, ...]) -> str:
    """``STRUCT(...)`` of the fields sorted by name: the shape of ``source.fields`` and of stored records."""
    return "STRUCT(" + ", ".join(
        f"{quote_identifier(f.name)} {f.duckdb_type}" for f in sorted(fields, key=lambda f: f.name)
    ) + ")"


def _check_key(con: duckdb.DuckDBPyConnection, spec: SyncSpec, src: str, null_example_sql: str) -> None:
    """Refuse a source whose primary key has NULLs or duplicates, quoting a few bad keys."""
    key_desc = ", ".join(spec.primary_key)
    nulls = con.execute(f"select count(*) from {src} where key_is_null").fetchone()
    if nulls and nulls[0]:
        example = con.execute(null_example_sql).fetchone()
        shown = dict(zip(spec.primary_key, example[0] if example else ()))
        raise SourceError(
            f"sync {spec.name!r}: primary key ({key_desc}) of {spec.source_relation!r} is NULL in {nulls[0]:,} row(s), "
            f"e.g. {shown}; filter them out in the model"
        )
    duplicates = con.execute(
        f"select record_key, count(*) as n from {src} group by record_key having count(*) > 1 "
        f"order by n desc, record_key limit {_BAD_KEYS_SHOWN}"
    ).fetchall()
    if duplicates:
        total = con.execute(
            f"select count(*) from (select record_key from {src} group by record_key having count(*) > 1)"
        ).fetchone()
        shown = ", ".join(f"{key!r} ({n} rows)" for key, n in duplicates)
        raise SourceError(
            f"sync {spec.name!r}: primary key ({key_desc}) of {spec.source_relation!r} is not unique: "
            f"{total[0] if total else len(duplicates):,} key(s) repeat, e.g. {shown}"
        )
