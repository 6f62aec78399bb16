"""The destination interface: small objects with declared properties that receive records.

Two delivery styles share one base, because destinations differ in what they need:

* :class:`RecordDestination` — record-level APIs (CRM upsert, ad-audience add/remove, webhooks).
  It receives only the records this run adds, changes or removes, in batches of one operation
  each, and acknowledges each batch (optionally rejecting single records). State advances per
  acknowledged batch.
* :class:`SnapshotDestination` — files and tables that must hold the whole audience. It receives
  the audience as it stands after this run (streamed, sorted by key) plus the list of changes,
  and either writes all of it or raises. State advances only after it returns.

Like dlt's destinations, limits are *declared* (``max_batch_size``, ``max_requests_per_second``,
``supported_operations``) rather than coded into each destination, so the engine can enforce them
in one place. Settings that are secrets are wrapped in :class:`Secret` and never appear in ``repr``
or in logs.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import pyarrow as pa

from reverse_etl.spec import Operation, SyncMode

ALL_OPERATIONS: frozenset[Operation] = frozenset(Operation)


class Secret:
    """A setting that must never be printed (API key, password, token).

    ``str()`` and ``repr()`` show ``'***'``; call :meth:`reveal` where the value is really needed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a Secret needs a non-empty string value")
        self._value = value

    def reveal(self) -> str:
        """Return the secret value (only at the point of use, e.g. an auth header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True)
class RunInfo:
    """What a destination may know about the run it is taking part in.

    Attributes
    ----------
    sync_name, run_id
        Identify the run; ``run_id`` is unique and sortable by start time.
    mode, full_resync
        As requested for this run.
    started_at
        UTC, without zone.
    fields
        Destination field names in declared order (the columns of every batch).
    primary_key_fields
        The destination fields that carry the primary key.
    """

    sync_name: str
    run_id: str
    mode: SyncMode
    full_resync: bool
    started_at: datetime
    fields: tuple[str, ...]
    primary_key_fields: tuple[str, ...]


@dataclass(frozen=True)
class ChangeBatch:
    """Records of one operation, handed to a :class:`RecordDestination` at once.

    Attributes
    ----------
    operation
        ``add``, ``change`` or ``remove`` — one per batch, since many APIs use a different call each.
    sequence
        1-based position of the batch within the run.
    keys
        The record keys, aligned with the rows of ``records`` (use them in :class:`BatchResult`).
    records
        One row per record, columns = destination fields. For ``remove`` the values are those last
        sent, so a destination that deletes by e-mail still has the e-mail.
    idempotency_key
        Identifies this batch's content for the destination's de-duplication (Amplitude's
        ``message_id``, an ``Idempotency-Key`` header). It stays the same when the batch is retried,
        in the run or by a later run after a crash — and so does everything else in the batch, so a
        destination that encodes only the batch (and its settings) sends the same bytes under the
        same key, as receivers that follow "same key, same request" require.
    created_at
        When the batch was made: the start of the run that first planned it (UTC, no zone), kept by
        replays. Use it, not the clock, for any time a request carries (a webhook's ``computed_time``).
    """

    operation: Operation
    sequence: int
    keys: tuple[str, ...]
    records: pa.Table
    idempotency_key: str = ""
    created_at: datetime | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def to_pylist(self) -> list[dict[str, Any]]:
        """The records as a list of plain dicts (field -> value)."""
        return self.records.to_pylist()


@dataclass(frozen=True)
class BatchResult:
    """A destination's answer for one batch: everything acknowledged except ``rejected``.

    Attributes
    ----------
    rejected
        Record key -> reason, for records the destination refused (e.g. invalid e-mail). They are
        logged in ``sync_records`` and retried by the next run, since their state does not advance.
        Use it for transient, per-record failures (the destination was busy for that record).
    permanent
        Record key -> reason, for records the destination refused for good (invalid e-mail, unknown
        id). They are logged as ``rejected`` and not sent again until their data changes.
    skipped
        Record key -> reason, for records this destination did not send by its own rule (e.g. no usable
        identifier after normalising, ``unresolved mapping``). Logged as ``skipped``; not sent again
        until their data changes; never a reason to fail the batch.
    """

    rejected: Mapping[str, str] = field(default_factory=dict)
    permanent: Mapping[str, str] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """The audience as the destination must hold it after this run, for a :class:`SnapshotDestination`.

    Attributes
    ----------
    run
        The run this snapshot belongs to.
    row_count
        How many records :meth:`batches` yields in total.
    rows_added, rows_changed, rows_removed
        What this run applies compared with the last successful run.
    schema
        Arrow schema of the batches.
    """

    run: RunInfo
    row_count: int
    rows_added: int
    rows_changed: int
    rows_removed: int
    schema: pa.Schema
    _open_reader: Callable[[], pa.RecordBatchReader] = field(repr=False)
    _read_changes: Callable[[], pa.Table] = field(repr=False)
    _open_readers: list[pa.RecordBatchReader] = field(default_factory=list, repr=False, compare=False)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Stream the audience, sorted by primary key, as Arrow record batches.

        The stream holds the warehouse connection; consume it fully (or stop early by raising) before
        calling :meth:`changes`.
        """
        reader = self._open_reader()
        self._open_readers.append(reader)
        try:
            yield from reader
        finally:
            self.close()

    def close(self) -> None:
        """Close any stream still open (the engine calls this even when the destination failed).

        An unfinished DuckDB result blocks every later query on the connection, and a generator
        abandoned by an exception is only finalised when its traceback is gone.
        """
        while self._open_readers:
            self._open_readers.pop().close()

    def changes(self) -> pa.Table:
        """The records this run adds, changes or removes: columns ``operation``, ``record_key``."""
        return self._read_changes()


class Destination(abc.ABC):
    """Base of every destination: declared properties, a location, a configuration check.

    Subclass :class:`RecordDestination` or :class:`SnapshotDestination`, not this class.

    Class attributes
    ----------------
    kind
        Short name of the destination type (``csv``, ``parquet``, ``http``...), for metadata and UI.
    max_batch_size
        Hard cap on records per batch (the engine uses ``min(spec.batch_size, max_batch_size)``).
    max_requests_per_second
        Declared rate limit; enforced by the engine's sender for HTTP destinations (later issue).
    supported_operations
        Operations the destination can carry out; a sync whose mode needs another one is refused.
    flat_columns
        ``True`` when the destination can only hold scalar values (CSV): list / struct / map columns
        are then given to it as JSON text.
    """

    kind: ClassVar[str] = "destination"
    max_batch_size: ClassVar[int | None] = None
    max_requests_per_second: ClassVar[float | None] = None
    supported_operations: ClassVar[frozenset[Operation]] = ALL_OPERATIONS
    flat_columns: ClassVar[bool] = False
    # Identifier kinds (see IDENTIFIER_KINDS) a sync must map for this destination: every one of
    # ``required_identifiers`` and at least one of ``any_identifier_of`` (when not empty).
    required_identifiers: ClassVar[frozenset[str]] = frozenset()
    any_identifier_of: ClassVar[frozenset[str]] = frozenset()
    # Marketing destinations (e-mail, ads, CRM) send only users with marketing consent unless the
    # sync explicitly declares otherwise; files and tables do not require it.
    requires_consent: ClassVar[bool] = False
    # True when a sync owns what is at ``location`` (a file, a table): two syncs there would
    # overwrite each other, so the declarations refuse it. APIs that hold many audiences say False.
    exclusive_location: ClassVar[bool] = False

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, sync_name: str, base_dir: Any) -> Destination:
        """Build the destination from its ``destinations.yml`` settings (secrets already resolved).

        ``base_dir`` is the folder relative paths resolve against (the warehouse's folder).
        Raises ``ValueError`` naming the setting when one is missing or invalid; the base class, for
        destinations built only in code, raises ``TypeError``.
        """
        raise TypeError(f"{cls.__name__} cannot be configured from settings")

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where records go (a path, a URL without credentials), for run results and logs."""

    def check(self) -> None:
        """Fail early, before anything is planned or sent, when the destination cannot work.

        Raises
        ------
        DestinationError
            With a message saying what is wrong (default: nothing to check).
        """

    def settings(self) -> dict[str, Any]:
        """Public view of this destination's settings (used by ``repr``); secrets are masked.

        Everything that shapes what is sent must be here: the engine replays a batch under its old
        idempotency key only while these settings are unchanged.
        """
        return {"location": self.location}

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={'***' if isinstance(v, Secret) else v!r}" for k, v in self.settings().items()
        )
        return f"{type(self).__name__}({shown})"


class RecordDestination(Destination):
    """A destination that receives only the changed records, in batches, and acknowledges each."""

    def begin(self, run: RunInfo) -> None:
        """Called once before the first batch of a run (open a session, an upload job...)."""

    @abc.abstractmethod
    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        """Deliver one batch.

        Returning (``None`` or a :class:`BatchResult`) acknowledges every record of the batch except
        the rejected ones; raising acknowledges none of them and fails the run.
        """

    def finish(self, run: RunInfo, *, succeeded: bool) -> None:
        """Called once after the last batch, or after a failure (close the session)."""


class SnapshotDestination(Destination):
    """A destination that must hold the whole audience (a file, a replaced table)."""

    @abc.abstractmethod
    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Make the destination hold exactly ``snapshot``, all or nothing.

        Returning acknowledges every record of the run; raising acknowledges none, and the
        destination must then still hold what it held before (write atomically).
        """
