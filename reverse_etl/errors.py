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
