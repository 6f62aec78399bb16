"""Reverse ETL: ship warehouse models (cohorts, properties, predictions) to destinations.

A plain library — no orchestrator import — usable from a notebook::

    from cohortflow.warehouse import connect
    from reverse_etl import SyncSpec, CsvFileDestination, run_sync

    spec = SyncSpec(name="cart_abandoners_csv", source_relation="cohorts.cart_abandoners_24h",
                    primary_key=["user_id"], mode="mirror")
    result = run_sync(connect(), spec, CsvFileDestination("exports/cart_abandoners.csv"))
    print(result.format_text())

See ``docs/syncs.md``.
"""

from reverse_etl.destinations import (
    BatchResult,
    ChangeBatch,
    CsvFileDestination,
    Destination,
    InMemoryDestination,
    ParquetFileDestination,
    RecordDestination,
    RunInfo,
    Secret,
    Snapshot,
    SnapshotDestination,
)
from reverse_etl.engine import SyncResult, run_sync
from reverse_etl.errors import DestinationError, SourceError, SyncError, SyncLockedError, SyncSpecError
from reverse_etl.plan import SyncPlan, plan_sync
from reverse_etl.spec import Operation, SyncMode, SyncSpec
from reverse_etl.state import STATE_SCHEMA, ensure_state_tables

__all__ = [
    "STATE_SCHEMA",
    "BatchResult",
    "ChangeBatch",
    "CsvFileDestination",
    "Destination",
    "DestinationError",
    "InMemoryDestination",
    "Operation",
    "ParquetFileDestination",
    "RecordDestination",
    "RunInfo",
    "Secret",
    "Snapshot",
    "SnapshotDestination",
    "SourceError",
    "SyncError",
    "SyncLockedError",
    "SyncMode",
    "SyncPlan",
    "SyncResult",
    "SyncSpec",
    "SyncSpecError",
    "ensure_state_tables",
    "plan_sync",
    "run_sync",
]
