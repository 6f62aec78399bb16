"""Planning a sync: the diff between the source relation and what was last sent, in DuckDB SQL.

Each source record gets a key (the primary key as text) and a hash of its mapped fields (md5 of the
JSON of the fields, sorted by name so re-ordering a mapping resends nothing). A full outer join with
``cohortflow_syncs.sync_state`` classifies every key as add / change / remove / unchanged.

The plan lives in three temporary tables owned by the :class:`SyncPlan`, so batches, samples, the
snapshot and the state update all read one consistent picture even if the source changes mid-run:

* ``source`` — one copy of the source: key, hash, fields (as one struct, so no field name can clash
  with the plan's own columns);
* ``diff`` — narrow: key, operation, whether the mode sends it, and its send position;
* ``previous`` — the last-sent values of changed and removed records only.

Keeping the wide data out of the join and the sort is what makes a 1M-record plan take about a
second rather than several.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

import duckdb
import pyarrow as pa

from reverse_etl.destinations.base import ChangeBatch, RunInfo, Snapshot
from reverse_etl.errors import SourceError, SyncSpecError
from reverse_etl.spec import Operation, SyncSpec
from reverse_etl.state import STATE_SCHEMA, ensure_state_tables

# Removes first: a capped destination (audience size limits) gets room before adds arrive.
SEND_ORDER: tuple[Operation, ...] = (Operation.REMOVE, Operation.CHANGE, Operation.ADD)
_OPERATION_RANK = {op: rank for rank, op in enumerate(SEND_ORDER)}
# Records read from DuckDB per query when batching: each read scans the plan's source copy, so
# small destination batches (Braze takes 75) are cut from larger reads rather than read one by one.
FETCH_SIZE = 50_000
# How many duplicate / NULL keys an error message quotes.
_BAD_KEYS_SHOWN = 3


def quote_identifier(name: str) -> str:
    """Quote a SQL identifier for DuckDB (double quotes, inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a SQL string literal (single quotes, inner quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _is_nested(duckdb_type: str) -> bool:
    upper = duckdb_type.upper()
    return upper.endswith("]") or upper.startswith(("STRUCT", "MAP", "UNION"))


@dataclass(frozen=True)
class MappedField:
    """One shipped field: destination name, source column and its DuckDB type."""

    name: str
    column: str
    duckdb_type: str


def resolve_fields(con: duckdb.DuckDBPyConnection, spec: SyncSpec) -> tuple[MappedField, ...]:
    """Check the source relation and the field mapping against the warehouse.

    Returns
    -------
    tuple of MappedField
        In declared order (all source columns in table order when ``spec.fields`` is ``None``).

    Raises
    ------
    SourceError
        When the relation does not exist or a mapped / key column is missing from it.
    """
    relation_sql = ".".join(quote_identifier(p) for p in spec.relation_parts)
    try:
        described = con.execute(f"describe select * from {relation_sql}").fetchall()
    except duckdb.CatalogException as exc:
        table = spec.relation_parts[-1]
        similar = [
            row[0]
            for row in con.execute(
                "select table_schema || '.' || table_name from information_schema.tables "
                "where lower(table_name) = lower(?) order by 1",
                [table],
            ).fetchall()
        ]
        hint = f"; relations with that name: {', '.join(similar)}" if similar else " (has dbt built it?)"
        raise SourceError(
            f"sync {spec.name!r}: source relation {spec.source_relation!r} does not exist{hint}"
        ) from exc
    types = {row[0]: row[1] for row in described}
    # DuckDB identifiers are case-insensitive; accept any case but ship the column's real name.
    by_lower = {name.lower(): name for name in types}

    def real_column(column: str, what: str) -> str:
        found = by_lower.get(column.lower())
        if found is None:
            raise SourceError(
                f"sync {spec.name!r}: {what} column {column!r} is not in {spec.source_relation!r} "
                f"(columns: {', '.join(types)})"
            )
        return found

    for column in spec.primary_key:
        real_column(column, "primary_key")
    mapping = dict(spec.fields) if spec.fields is not None else {c: c for c in types}
    resolved = []
    for dest, src in mapping.items():
        column = real_column(src, f"fields[{dest!r}]")
        resolved.append(MappedField(name=dest, column=column, duckdb_type=types[column]))
    return tuple(resolved)


class SyncPlan:
    """The diff for one sync, held in temporary tables of the connection (see the module docstring).

    Use as a context manager (or call :meth:`close`) to drop them. Counts are attributes;
    records are read with :meth:`sample`, :meth:`batches` and :meth:`snapshot`.

    Attributes
    ----------
    spec
        The sync planned.
    full_resync
        Whether the previous state was ignored for adds / changes.
    adds, changes, removes, unchanged
        The whole diff, whatever the mode.
    to_send
        Per operation, how many records this sync's mode sends.
    fields
        The shipped fields.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        spec: SyncSpec,
        tables: _PlanTables,
        fields: tuple[MappedField, ...],
        counts: dict[tuple[str, bool], int],
        full_resync: bool,
    ) -> None:
        self._con = con
        self._t = tables
        self.spec = spec
        self.full_resync = full_resync
        self.fields = fields
        self._counts = counts
        self.adds = self._count(Operation.ADD.value)
        self.changes = self._count(Operation.CHANGE.value)
        self.removes = self._count(Operation.REMOVE.value)
        self.unchanged = self._count("unchanged")
        self.to_send: dict[Operation, int] = {op: counts.get((op.value, True), 0) for op in Operation}
        self._closed = False

    def _count(self, operation: str) -> int:
        return sum(n for (op, _), n in self._counts.items() if op == operation)

    # -- counts ---------------------------------------------------------------------------------

    @property
    def rows_to_send(self) -> int:
        """Records this run will hand to the destination."""
        return sum(self.to_send.values())

    @property
    def rows_skipped(self) -> int:
        """Diff records the mode does not send (e.g. removes under ``upsert``)."""
        return self.adds + self.changes + self.removes - self.rows_to_send

    @property
    def source_rows(self) -> int:
        """Records in the source relation."""
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
        """One line: the diff and what the mode sends."""
        sent = ", ".join(f"{op.value} {self.to_send[op]:,}" for op in SEND_ORDER if op in self.spec.sync_mode.operations)
        return (
            f"sync {self.spec.name!r} ({self.spec.sync_mode.value}{', full resync' if self.full_resync else ''}): "
            f"{self.adds:,} to add, {self.changes:,} changed, {self.removes:,} to remove, {self.unchanged:,} unchanged; "
            f"sends {sent or 'nothing'}"
        )

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

    def sample_keys(self, operation: Operation | str, limit: int = 5) -> list[str]:
        """Up to ``limit`` keys of the diff with this operation (``unchanged`` allowed), sorted."""
        op = operation.value if isinstance(operation, Operation) else str(operation)
        rows = self._con.execute(
            f"select record_key from {self._t.diff} where operation = ? order by record_key limit ?", [op, limit]
        ).fetchall()
        return [r[0] for r in rows]

    def sample(self, operation: Operation | str, limit: int = 5) -> list[dict[str, object]]:
        """Up to ``limit`` records of the diff with this operation (field -> value), sorted by key.

        For removes the values are those last sent.
        """
        op = Operation(operation)
        query = self._records_query(op, "true") + f" order by _cf_record_key limit {int(limit)}"
        return self._con.sql(query).to_arrow_table().remove_column(0).to_pylist()

    def batches(
        self,
        batch_size: int | None = None,
        operations: Iterable[Operation] | None = None,
        *,
        fetch_size: int = FETCH_SIZE,
    ) -> Iterator[ChangeBatch]:
        """Yield the records the mode sends, one operation per batch, removes first.

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
            Records per read from DuckDB (at least ``batch_size``).
        """
        size = batch_size or self.spec.batch_size
        # A whole number of batches per read, so that only an operation's last batch is short.
        fetch = max(size, fetch_size // size * size)
        wanted = set(operations) if operations is not None else set(Operation)
        sequence = 0
        for op, (low, high) in self._send_ranges().items():
            if op not in wanted:
                continue
            for start in range(low, high + 1, fetch):
                end = min(start + fetch - 1, high)
                query = self._records_query(op, f"d.send_seq between {start} and {end}") + " order by x.send_seq"
                chunk = self._con.sql(query).to_arrow_table()
                for offset in range(0, chunk.num_rows, size):
                    part = chunk.slice(offset, size)
                    sequence += 1
                    keys = tuple(part.column(0).to_pylist())
                    yield ChangeBatch(operation=op, sequence=sequence, keys=keys, records=part.remove_column(0))

    def _send_ranges(self) -> dict[Operation, tuple[int, int]]:
        """``send_seq`` range per operation; sequences are contiguous in SEND_ORDER."""
        ranges: dict[Operation, tuple[int, int]] = {}
        low = 1
        for op in SEND_ORDER:
            n = self.to_send[op]
            if n:
                ranges[op] = (low, low + n - 1)
                low += n
        return ranges

    def send_range(self, operation: Operation) -> tuple[int, int] | None:
        """The ``send_seq`` range of one operation, or ``None`` when the mode sends none of it."""
        return self._send_ranges().get(operation)

    def snapshot(self, run: RunInfo, *, flat_columns: bool = False, rows_per_batch: int | None = None) -> Snapshot:
        """The audience as it stands once this plan is applied, for snapshot destinations.

        That is the state after this run: for ``mirror`` exactly the source; for ``upsert`` the source
        plus records that left it (they were never removed); for ``insert_only`` / ``update_only``
        changes or adds that the mode does not send keep their previous form or stay out.

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

    # -- applying to state --------------------------------------------------------------------------

    def mark_acknowledged(
        self,
        *,
        run_id: str,
        sent_at: datetime,
        low: int,
        high: int,
        rejected: dict[str, str] | None = None,
    ) -> tuple[int, int]:
        """Record that the destination acknowledged send positions ``low..high`` (but ``rejected``).

        Moves ``sync_state`` forward for the acknowledged records and writes their ``sync_records``
        rows. Runs inside the caller's transaction, so the mark and the run's counters commit together.

        Returns
        -------
        (acknowledged, rejected)
            Record counts.
        """
        name = self.spec.name
        rejected = rejected or {}
        rejected_table = f"_cf_rejected_{uuid.uuid4().hex}"
        self._con.register(
            rejected_table,
            pa.table({"record_key": pa.array(list(rejected), pa.string()), "reason": pa.array(list(rejected.values()), pa.string())}),
        )
        t = self._t
        try:
            acked = (
                f"select d.record_key, d.operation from {t.diff} d where d.send_seq between {int(low)} and {int(high)} "
                f"and not exists (select 1 from {rejected_table} r where r.record_key = d.record_key)"
            )
            self._con.execute(
                f"delete from {STATE_SCHEMA}.sync_state where sync_name = ? "
                f"and record_key in (select record_key from ({acked}))",
                [name],
            )
            self._con.execute(
                f"insert into {STATE_SCHEMA}.sync_state (sync_name, record_key, record_hash, record, sent_at, run_id) "
                f"select ?, s.record_key, s.record_hash, to_json(s.fields), ?, ? from {t.source} s "
                f"join ({acked}) a on a.record_key = s.record_key where a.operation in ('add', 'change')",
                [name, sent_at, run_id],
            )
            self._con.execute(
                f"insert into {STATE_SCHEMA}.sync_records (run_id, sync_name, record_key, operation, status, reason) "
                f"select ?, ?, d.record_key, d.operation, case when r.record_key is null then 'sent' else 'rejected' end, r.reason "
                f"from {t.diff} d left join {rejected_table} r on r.record_key = d.record_key "
                f"where d.send_seq between {int(low)} and {int(high)}",
                [run_id, name],
            )
        finally:
            self._con.unregister(rejected_table)
        return high - low + 1 - len(rejected), len(rejected)

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


def plan_sync(con: duckdb.DuckDBPyConnection, spec: SyncSpec, *, full_resync: bool = False) -> SyncPlan:
    """Compute the diff between ``spec.source_relation`` and what the sync last sent.

    Parameters
    ----------
    con
        A writable connection to the warehouse (the state schema is created if missing).
    spec
        The sync.
    full_resync
        Ignore what was sent before: every source record is an add. Records sent before but gone
        from the source are still removes (a mirror only deletes what it sent).

    Returns
    -------
    SyncPlan
        Counts, samples and batches; close it (or use ``with``) when done.

    Raises
    ------
    SourceError
        Missing relation or column, or a primary key that is NULL or not unique (names a bad key).
    """
    if not isinstance(spec, SyncSpec):
        raise SyncSpecError(f"plan_sync needs a SyncSpec, got {type(spec).__name__}")
    ensure_state_tables(con)
    fields = resolve_fields(con, spec)
    key_fields = [next(f for f in fields if f.column.lower() == c.lower()) for c in spec.primary_key]
    # (every key column is shipped: SyncSpec checks it for explicit fields, and None ships all columns)
    relation_sql = ".".join(quote_identifier(p) for p in spec.relation_parts)

    if len(key_fields) == 1:
        key_expr = f"cast({quote_identifier(key_fields[0].column)} as varchar)"
    else:
        # A JSON array of strings: unambiguous whatever characters the parts contain.
        key_expr = "to_json([" + ", ".join(f"cast({quote_identifier(f.column)} as varchar)" for f in key_fields) + "])::varchar"
    # Fields sorted by name: to_json(fields) is then the hashed and stored form, and a re-ordered
    # mapping is not a change. Field names and values are both hashed.
    fields_expr = "{" + ", ".join(
        f"{quote_literal(f.name)}: {quote_identifier(f.column)}" for f in sorted(fields, key=lambda f: f.name)
    ) + "}"
    any_key_null = " or ".join(f"{quote_identifier(f.column)} is null" for f in key_fields)
    key_values = "[" + ", ".join(f"cast({quote_identifier(f.column)} as varchar)" for f in key_fields) + "]"

    tables = _PlanTables.new()
    try:
        con.execute(
            f"create temp table {tables.source} as select record_key, key_is_null, md5(to_json(fields)) as record_hash, fields "
            f"from (select {key_expr} as record_key, ({any_key_null}) as key_is_null, {fields_expr} as fields from {relation_sql})"
        )
        null_example_sql = f"select {key_values} from {relation_sql} where {any_key_null} limit 1"
        _check_key(con, spec, tables.source, null_example_sql)
        ignore_state = "true" if full_resync else "false"
        mode_ops = ", ".join(quote_literal(op.value) for op in spec.sync_mode.operations)
        rank = "case operation " + " ".join(f"when {quote_literal(op.value)} then {r}" for op, r in _OPERATION_RANK.items()) + " end"
        # Only keys and hashes take part in the join and the sort.
        con.execute(
            f"""
            create temp table {tables.diff} as
            with state as (
                select record_key, record_hash from {STATE_SCHEMA}.sync_state where sync_name = ?
            ),
            classified as (
                select
                    coalesce(s.record_key, t.record_key) as record_key,
                    case
                        when s.record_key is null then 'remove'
                        when t.record_key is null or {ignore_state} then 'add'
                        when s.record_hash <> t.record_hash then 'change'
                        else 'unchanged'
                    end as operation
                from (select record_key, record_hash from {tables.source}) s
                full outer join state t on s.record_key = t.record_key
            ),
            selected as (
                select record_key, operation, operation in ({mode_ops}) as is_selected from classified
            )
            select
                record_key, operation, is_selected,
                case when is_selected then row_number() over (partition by is_selected order by {rank}, record_key) end as send_seq
            from selected
            """,
            [spec.name],
        )
        con.execute(
            f"create temp table {tables.previous} as "
            f"select t.record_key, t.record as previous_record from {STATE_SCHEMA}.sync_state t "
            f"join {tables.diff} d on d.record_key = t.record_key "
            f"where t.sync_name = ? and d.operation in ('change', 'remove')",
            [spec.name],
        )
        counts = {
            (op, bool(sel)): n
            for op, sel, n in con.execute(f"select operation, is_selected, count(*) from {tables.diff} group by all").fetchall()
        }
    except BaseException:
        tables.drop(con)
        raise
    return SyncPlan(con, spec, tables, fields, counts, full_resync)


@dataclass(frozen=True)
class _PlanTables:
    """Names of a plan's temporary tables (unique per plan; temp tables are per connection)."""

    source: str
    diff: str
    previous: str

    @classmethod
    def new(cls) -> _PlanTables:
        suffix = uuid.uuid4().hex
        return cls(f"_cf_source_{suffix}", f"_cf_diff_{suffix}", f"_cf_previous_{suffix}")

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        for table in (self.source, self.diff, self.previous):
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
