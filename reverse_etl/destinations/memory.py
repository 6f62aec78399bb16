"""A destination that keeps the audience in a Python dict: previews in a notebook, engine contract tests.

It behaves like a record-level API (batches of one operation, acknowledged one by one), so what it
holds after a run is what a real API would hold.
"""

from __future__ import annotations

from typing import Any, ClassVar

from reverse_etl.destinations.base import BatchResult, ChangeBatch, RecordDestination, RunInfo
from reverse_etl.spec import Operation


class InMemoryDestination(RecordDestination):
    """Applies adds / changes / removes to :attr:`records` (record key -> field values).

    Parameters
    ----------
    name
        Shown as the location (``memory://<name>``).
    max_batch_size
        Optional cap on records per batch, to behave like a capped API.
    dedupe
        Like a receiver that de-duplicates on the idempotency key: a batch whose key was already
        applied is acknowledged without being applied again (default ``True``).

    Attributes
    ----------
    records
        What the destination holds now.
    batches
        ``(run_id, operation, number of records)`` for every batch received, in order.
    received
        ``(idempotency_key, operation, record keys)`` for every batch received, in order.
    applied_keys
        Idempotency keys of the batches applied.
    """

    kind: ClassVar[str] = "memory"

    def __init__(self, name: str = "default", *, max_batch_size: int | None = None, dedupe: bool = True) -> None:
        self.name = name
        # Instance-level override of the declared class property.
        self.max_batch_size = max_batch_size  # type: ignore[misc]
        self.dedupe = dedupe
        self.records: dict[str, dict[str, Any]] = {}
        self.batches: list[tuple[str, Operation, int]] = []
        self.received: list[tuple[str, Operation, tuple[str, ...]]] = []
        self.applied_keys: set[str] = set()

    @property
    def location(self) -> str:
        """``memory://<name>``."""
        return f"memory://{self.name}"

    def settings(self) -> dict[str, Any]:
        """Name, batch cap and de-duplication."""
        return {"name": self.name, "max_batch_size": self.max_batch_size, "dedupe": self.dedupe}

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        """Apply the batch to :attr:`records` (once per idempotency key when de-duplicating); accepts every record."""
        self.received.append((batch.idempotency_key, batch.operation, batch.keys))
        self.batches.append((run.run_id, batch.operation, len(batch)))
        if self.dedupe and batch.idempotency_key and batch.idempotency_key in self.applied_keys:
            return None
        self.applied_keys.add(batch.idempotency_key)
        if batch.operation is Operation.REMOVE:
            for key in batch.keys:
                self.records.pop(key, None)
        else:
            for key, values in zip(batch.keys, batch.to_pylist(), strict=True):
                self.records[key] = values
        return None
