"""The serving snapshot in Dagster: the last asset of every refresh, read by `cohortflow serve`.

The body calls ``cohortflow.serving.snapshot.publish_snapshot``: the served tables are copied out of
the warehouse into a new SQLite file and made current atomically; the API switches to it on its own.
"""

from typing import Any, Mapping, Sequence

import dagster as dg

from cohortflow.serving.settings import read_serving_file, serving_config_path, serving_paths
from cohortflow.serving.snapshot import publish_snapshot
from orchestration.resources import WarehouseResource

SERVING_SNAPSHOT_KEY = dg.AssetKey(["serving", "snapshot"])
# The marts the snapshot copies (each must exist when it runs).
SERVED_MODELS = ("user_properties", "cohort_memberships", "cohorts", "predictions", "recommendations", "user_devices")


def build_serving_snapshot_asset(
    deps: Sequence[dg.AssetKey], attributes: Sequence[str], syncs: Mapping[str, list[dict[str, str]]]
) -> dg.AssetsDefinition:
    """The asset that publishes the serving snapshot after the served models are built."""

    @dg.asset(
        key=SERVING_SNAPSHOT_KEY,
        deps=list(deps),
        group_name="serving",
        kinds={"sqlite"},
        description="The tables the Profile and Cohort APIs serve (profiles, memberships, cohorts, "
        "propensities, recommendations), copied out of the warehouse into a read-only file and made "
        "current atomically: `cohortflow serve` switches to it without a restart.",
    )
    def serving_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        path, serving_dir, _, _ = serving_paths(warehouse.resolved_path())
        keep = read_serving_file(serving_config_path()).snapshots_kept
        with warehouse.connect() as con:
            published = publish_snapshot(con, serving_dir, attributes=attributes, syncs=syncs, run_id=context.run_id, keep=keep)
        metadata: dict[str, Any] = {
            "snapshot_id": published.id,
            "data_as_of": published.as_of,
            "publish_seconds": dg.FloatMetadataValue(round(published.seconds, 2)),
            **{f"{table}_rows": dg.IntMetadataValue(count) for table, count in published.rows.items()},
        }
        return dg.MaterializeResult(metadata=metadata)

    return serving_snapshot
