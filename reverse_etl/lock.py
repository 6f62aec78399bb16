"""One run at a time per sync: an exclusive, non-blocking file lock next to the warehouse.

``flock`` locks belong to an open file, so they exclude a second run both in another process and in
the same process (another thread, another connection), and the kernel drops them when a process
dies — a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from types import TracebackType

import duckdb

from reverse_etl.errors import SyncLockedError


def default_lock_dir(con: duckdb.DuckDBPyConnection) -> Path:
    """``<warehouse file>.locks/`` beside the warehouse; a per-process temp folder for in-memory ones."""
    row = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchone()
    path = row[0] if row else None
    if path:
        return Path(path).resolve().with_name(Path(path).name + ".locks")
    # An in-memory database is private to this process, so a per-process folder is enough.
    return Path(tempfile.gettempdir()) / f"cohortflow-sync-locks-{os.getpid()}"


class SyncLock:
    """Exclusive lock for one sync; use as a context manager.

    Parameters
    ----------
    lock_dir
        Folder for lock files (created if missing).
    sync_name
        The sync to lock.

    Raises
    ------
    SyncLockedError
        On entry, when another run of the sync holds the lock (says which process holds it).
    """

    def __init__(self, lock_dir: Path, sync_name: str) -> None:
        self.sync_name = sync_name
        self.path = Path(lock_dir) / f"{sync_name}.lock"
        self._fd: int | None = None

    def acquire(self, holder: str = "") -> None:
        """Take the lock or fail at once (never waits: a scheduler retries later instead)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                held_by = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise SyncLockedError(
                f"sync {self.sync_name!r} is already running ({held_by}); lock file {self.path}"
            ) from None
        # Who holds it, for the error message a second run shows.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}{', ' + holder if holder else ''}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent). The lock file stays: deleting it would race with a new run."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
