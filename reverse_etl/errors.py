"""Errors raised by the sync engine.

Every message names the sync (and, where it applies, the field, relation or record key) so
that a failed run in a scheduler log says what to fix without opening the code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - import only for type checkers
    from reverse_etl.engine import SyncResult


class SyncError(Exception):
    """A sync could not run or did not finish.

    Attributes
    ----------
    result
        The recorded outcome of the run when one was written (status ``failed``), else ``None``.
    """

    def __init__(self, message: str, *, result: SyncResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class SyncSpecError(SyncError, ValueError):
    """A sync declaration is invalid (names the sync and the field)."""


class SourceError(SyncError):
    """The source relation is missing, lacks a mapped column, or has a bad primary key."""


class SyncLockedError(SyncError):
    """Another run of the same sync holds the lock."""


class DestinationError(SyncError):
    """A destination is misconfigured or refused a write.

    Destinations raise this for errors they understand (bad path, rejected request); any other
    exception raised by a destination is wrapped in :class:`SyncError` by the engine.
    """


class TransientDestinationError(DestinationError):
    """The destination did not answer usefully (5xx, 429, timeout, dropped connection) even after the
    in-run retries. Nothing of the batch counts as acknowledged; the run fails and a later run sends
    the batch again (under the same idempotency key).

    Attributes
    ----------
    retry_after
        Seconds the destination asked to wait (``Retry-After``), when it said so.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BatchRejectedError(DestinationError):
    """The destination refused a whole batch with a permanent error (a 4xx other than 408 / 429).

    The engine splits the batch in halves and sends each again to isolate the bad record(s); a single
    record refused this way is marked rejected with ``reason`` and not retried until its data changes.
    """

    def __init__(self, message: str, *, reason: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.status = status
