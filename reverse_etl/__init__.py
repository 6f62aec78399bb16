"""Reverse ETL: ship warehouse models (cohorts, properties, predictions) to destinations.

A plain library — no orchestrator import — usable from a notebook::

    from cohortflow.warehouse import connect
    from reverse_etl import SyncSpec, CsvFileDestination, run_sync

    spec = SyncSpec(name="cart_abandoners_csv", source_relation="cohorts.cart_abandoners_24h",
                    primary_key=["user_id"], mode="mirror")
    result = run_sync(connect(), spec, CsvFileDestination("exports/cart_abandoners.csv"))
    print(result.format_text())

See ``docs/syncs.md`` (declaring syncs) and ``docs/sync-engine.md`` (what the engine guarantees).
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
from reverse_etl.control import is_paused, pause_sync, record_history, resume_sync, sync_history
from reverse_etl.engine import SyncResult, run_sync
from reverse_etl.errors import (
    BatchRejectedError,
    DestinationError,
    SourceError,
    SyncError,
    SyncLockedError,
    SyncSpecError,
    TransientDestinationError,
)
from reverse_etl.plan import SyncPlan, plan_sync
from reverse_etl.spec import IDENTIFIER_KINDS, Operation, SyncMode, SyncSpec, check_identifiers
from reverse_etl.state import STATE_SCHEMA, ensure_state_tables

__all__ = [
    "IDENTIFIER_KINDS",
    "STATE_SCHEMA",
    "BatchRejectedError",
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
    "TransientDestinationError",
    "check_identifiers",
    "ensure_state_tables",
    "is_paused",
    "pause_sync",
    "plan_sync",
    "record_history",
    "resume_sync",
    "run_sync",
    "sync_history",
]
