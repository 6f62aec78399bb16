"""One Dagster asset per declared sync, downstream of the dbt model it ships."""
# No `from __future__ import annotations`: Dagster reads the Config annotations at runtime.


from typing import Any

import dagster as dg
from pydantic import Field

from orchestration.resources import WarehouseResource
from orchestration.sync_declarations import SyncDeclaration
from reverse_etl import SyncResult, run_sync

SYNC_GROUP = "syncs"


class SyncRunConfig(dg.Config):
    """Run-time switches of a sync."""

    full_resync: bool = Field(default=False, description="Send the whole audience again, not only the diff.")
    dry_run: bool = Field(default=False, description="Plan only: count adds / changes / removes, send nothing.")


def sync_metadata(result: SyncResult) -> dict[str, Any]:
    """What the Dagster UI shows for a sync run: the counts a marketer asks about first."""
    return {
        "run_id": result.run_id,
        "status": result.status,
        "rows_added": dg.MetadataValue.int(result.rows_added),
        "rows_changed": dg.MetadataValue.int(result.rows_changed),
        "rows_removed": dg.MetadataValue.int(result.rows_removed),
        "rows_unchanged": dg.MetadataValue.int(result.rows_unchanged),
        "rows_rejected": dg.MetadataValue.int(result.rows_rejected),
        "audience_size": dg.MetadataValue.int(result.audience_size),
        "destination": dg.MetadataValue.path(str(result.destination_location)),
        "sample_added": dg.MetadataValue.json(list(result.sample_added)),
        "sample_removed": dg.MetadataValue.json(list(result.sample_removed)),
    }


def build_sync_asset(declaration: SyncDeclaration, source_key: dg.AssetKey) -> dg.AssetsDefinition:
    """The asset that runs one sync; its body only wires the resource to ``reverse_etl.run_sync``."""
    spec = declaration.spec

    @dg.asset(
        name=spec.name,
        key_prefix=[SYNC_GROUP],
        deps=[source_key],
        group_name=SYNC_GROUP,
        kinds={declaration.destination.type},
        description=declaration.description or f"Sync {declaration.model_name} to {declaration.destination.name}.",
        metadata={
            "model": declaration.model_name,
            "destination": declaration.destination.name,
            "mode": spec.sync_mode.value,
            "primary_key": ", ".join(spec.primary_key),
            "schedule": declaration.schedule,
            "declared_in": declaration.declared_in,
        },
    )
    def _sync(context: dg.AssetExecutionContext, warehouse: WarehouseResource, config: SyncRunConfig) -> dg.MaterializeResult:
        destination = declaration.destination.build(warehouse.resolved_path(), spec.name)
        with warehouse.connect() as con:
            result = run_sync(con, spec, destination, full_resync=config.full_resync, dry_run=config.dry_run)
        context.log.info(result.format_text())
        return dg.MaterializeResult(metadata=sync_metadata(result))

    return _sync
