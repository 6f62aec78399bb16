"""File destinations: the audience as one CSV or Parquet file, replaced atomically on every run.

After a successful run the file holds exactly the audience (sorted by primary key) and beside it:

* ``<file>.manifest.json`` — sync, run id, written_at, row count, sha256 and size of the file, and
  the counts added / changed / removed. Written last: a reader that finds the file's sha256 equal to
  the manifest's knows it has a complete, matching pair.
* ``<file>.changes/<run_id>.csv`` — what this run changed (``operation,record_key``), one file per run.

Every file is written to a temporary file in the same folder, flushed and fsync'ed, then moved over
the old one with ``os.replace`` (atomic on POSIX), so a crash or an error mid-write leaves the
previous version intact.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from reverse_etl.destinations.base import Snapshot, SnapshotDestination
from reverse_etl.errors import DestinationError

MANIFEST_SUFFIX = ".manifest.json"
CHANGES_SUFFIX = ".changes"
MANIFEST_FORMAT_VERSION = 1


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; without it a power cut can bring back the old file.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> str:
    """Write ``path`` through a temp file in its folder + fsync + ``os.replace``.

    Parameters
    ----------
    path
        Final file.
    write
        Called with the open binary temp file; may raise, in which case ``path`` is left untouched
        and the temp file removed.

    Returns
    -------
    str
        sha256 (hex) of the bytes written.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return digest


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """sha256 (hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _utc_iso(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds") + "Z"


class FileSnapshotDestination(SnapshotDestination):
    """Shared behaviour of file destinations; subclasses only encode rows (:meth:`write_rows`).

    Parameters
    ----------
    path
        The audience file. Its folder is created if missing.
    write_changes
        Also write ``<file>.changes/<run_id>.csv`` listing what each run changed.
    """

    file_format: ClassVar[str] = "file"
    exclusive_location: ClassVar[bool] = True
    # destinations.yml settings of a file destination (see :meth:`from_settings`).
    SETTINGS: ClassVar[tuple[str, ...]] = ("directory", "filename", "write_changes")
    DEFAULT_DIRECTORY: ClassVar[str] = "destinations"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, sync_name: str, base_dir: Any) -> FileSnapshotDestination:
        """Build from ``destinations.yml`` settings; nothing is read or created on disk.

        Settings
        --------
        directory
            Folder of the file; relative to ``base_dir`` (the warehouse's folder). Default ``destinations``.
        filename
            File name inside ``directory``; default ``<sync name>.csv`` / ``<sync name>.parquet``.
            A plain name: no folder part (one file per sync, so give each sync its own name).
        write_changes
            ``true`` (default) or ``false``: also write ``<file>.changes/<run_id>.csv``.

        Raises
        ------
        ValueError
            Naming the setting: unknown, of the wrong type, or empty.
        """
        if not isinstance(settings, Mapping):
            raise ValueError(f"{cls.kind} destination settings must be a mapping, got {type(settings).__name__}")
        unknown = sorted(set(settings) - set(cls.SETTINGS))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(map(repr, unknown))} for a {cls.kind} destination; known: {', '.join(cls.SETTINGS)}"
            )
        directory = settings.get("directory", cls.DEFAULT_DIRECTORY)
        if not isinstance(directory, (str, os.PathLike)) or not str(directory).strip():
            raise ValueError(f"setting 'directory' must be a folder path, got {directory!r}")
        filename = settings.get("filename", f"{sync_name}.{cls.file_format}")
        if not isinstance(filename, str) or not filename.strip() or filename.strip() in (".", ".."):
            raise ValueError(f"setting 'filename' must be a file name, got {filename!r}")
        if "/" in filename or os.sep in filename:
            raise ValueError(f"setting 'filename' must be a plain file name (put folders in 'directory'), got {filename!r}")
        write_changes = settings.get("write_changes", True)
        if not isinstance(write_changes, bool):
            raise ValueError(f"setting 'write_changes' must be true or false, got {write_changes!r}")
        folder = Path(str(directory).strip()).expanduser()
        if not folder.is_absolute():
            folder = Path(base_dir) / folder
        return cls(folder / filename.strip(), write_changes=write_changes)

    def __init__(self, path: str | os.PathLike[str], *, write_changes: bool = True) -> None:
        self.path = Path(path).expanduser().resolve()
        self.write_changes = write_changes

    @property
    def location(self) -> str:
        """Absolute path of the audience file."""
        return str(self.path)

    @property
    def manifest_path(self) -> Path:
        """``<file>.manifest.json``."""
        return self.path.with_name(self.path.name + MANIFEST_SUFFIX)

    @property
    def changes_dir(self) -> Path:
        """``<file>.changes/``: one ``<run_id>.csv`` per run."""
        return self.path.with_name(self.path.name + CHANGES_SUFFIX)

    def settings(self) -> dict[str, Any]:
        """Path and options (no secrets here)."""
        return {"path": str(self.path), "write_changes": self.write_changes}

    def check(self) -> None:
        """Create the folder if needed; refuse a path that is a folder or whose parent is a file.

        Raises
        ------
        DestinationError
            Naming the path and the problem.
        """
        if self.path.is_dir():
            raise DestinationError(f"{self.kind} destination {self.path} is a directory; give a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise DestinationError(f"{self.kind} destination {self.path}: parent {self.path.parent} is not a directory") from exc
        except PermissionError as exc:
            raise DestinationError(f"{self.kind} destination {self.path}: cannot create folder {self.path.parent}") from exc
        if not os.access(self.path.parent, os.W_OK):
            raise DestinationError(f"{self.kind} destination {self.path}: folder {self.path.parent} is not writable")

    def _remove_stale_temp_files(self) -> None:
        # A run killed mid-write leaves its temp file behind; the engine's per-sync lock means no
        # live run of this sync is writing one now.
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    @abc.abstractmethod
    def write_rows(self, out: IO[bytes], schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
        """Encode the audience into ``out``; return the number of rows written."""

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the file with the audience, then the changes file, then the manifest.

        Raises
        ------
        DestinationError
            When the rows written differ from the snapshot's count (the file is then not replaced).
        """
        self.check()
        self._remove_stale_temp_files()
        written: list[int] = []

        def write_data(out: IO[bytes]) -> None:
            rows = self.write_rows(out, snapshot.schema, snapshot.batches())
            if rows != snapshot.row_count:
                raise DestinationError(
                    f"{self.kind} destination {self.path}: wrote {rows:,} rows, expected {snapshot.row_count:,}; file not replaced"
                )
            written.append(rows)

        digest = atomic_write(self.path, write_data)
        changes_name = None
        if self.write_changes:
            changes = snapshot.changes()
            self.changes_dir.mkdir(exist_ok=True)
            changes_path = self.changes_dir / f"{snapshot.run.run_id}.csv"
            atomic_write(changes_path, lambda out: pa_csv.write_csv(changes, out))
            changes_name = str(changes_path.relative_to(self.path.parent))
        manifest = {
            "format_version": MANIFEST_FORMAT_VERSION,
            "sync_name": snapshot.run.sync_name,
            "run_id": snapshot.run.run_id,
            "mode": snapshot.run.mode.value,
            "full_resync": snapshot.run.full_resync,
            "written_at": _utc_iso(datetime.now(UTC)),
            "file": self.path.name,
            "format": self.file_format,
            "row_count": written[0],
            "sha256": digest,
            "bytes": self.path.stat().st_size,
            "fields": list(snapshot.run.fields),
            "primary_key": list(snapshot.run.primary_key_fields),
            "rows_added": snapshot.rows_added,
            "rows_changed": snapshot.rows_changed,
            "rows_removed": snapshot.rows_removed,
            "changes_file": changes_name,
        }
        payload = (json.dumps(manifest, indent=2) + "\n").encode()
        atomic_write(self.manifest_path, lambda out: out.write(payload))


class CsvFileDestination(FileSnapshotDestination):
    """The audience as a CSV file (header row, UTF-8, sorted by primary key).

    Nested values (lists, structs) are written as JSON text; NULL is an empty cell.
    """

    kind: ClassVar[str] = "csv"
    file_format: ClassVar[str] = "csv"
    flat_columns: ClassVar[bool] = True

    def write_rows(self, out: IO[bytes], schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
        """Stream batches through pyarrow's CSV writer."""
        rows = 0
        with pa_csv.CSVWriter(out, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        return rows


class ParquetFileDestination(FileSnapshotDestination):
    """The audience as a Parquet file (types kept, zstd-compressed, sorted by primary key)."""

    kind: ClassVar[str] = "parquet"
    file_format: ClassVar[str] = "parquet"

    def write_rows(self, out: IO[bytes], schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
        """Stream batches through a Parquet writer."""
        rows = 0
        with pq.ParquetWriter(out, schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        return rows
