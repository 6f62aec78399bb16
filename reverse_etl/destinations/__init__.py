"""Destinations a sync can ship to (files now; HTTP, Postgres and vendor APIs plug in the same way)."""

from reverse_etl.destinations.base import (
    BatchResult,
    ChangeBatch,
    Destination,
    RecordDestination,
    RunInfo,
    Secret,
    Snapshot,
    SnapshotDestination,
)
from reverse_etl.destinations.files import CsvFileDestination, FileSnapshotDestination, ParquetFileDestination
from reverse_etl.destinations.memory import InMemoryDestination

__all__ = [
    "BatchResult",
    "ChangeBatch",
    "CsvFileDestination",
    "Destination",
    "FileSnapshotDestination",
    "InMemoryDestination",
    "ParquetFileDestination",
    "RecordDestination",
    "RunInfo",
    "Secret",
    "Snapshot",
    "SnapshotDestination",
]
