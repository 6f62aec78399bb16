"""The cohortflow code location: dbt models, predictions, recommendations, syncs, the warehouse and the schedules.

Loaded by ``workspace.yaml`` (``dagster dev``) and by ``cohortflow run``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg
from dagster_dbt import get_asset_key_for_model

from cohortflow.as_of import format_as_of
from cohortflow.declarations import ACTIVE_LAST_90_DAYS, load_project_predictions, load_project_recommendations
from cohortflow.serving.snapshot import attribute_columns, syncs_by_cohort
from cohortflow.sync_declarations import DESTINATIONS_FILE, load_project_declarations
from orchestration.dbt import DBT_ASSETS_OP, cohortflow_dbt_models, dbt_cli_resource, dbt_project, source_asset_specs
from orchestration.landed_events import EVERY_MINUTE_CRON, RAW_EVENTS_KEY, build_events_schedule, build_landed_events_asset
from orchestration.predictions import build_prediction_asset, prediction_key
from orchestration.recommendations import build_recommendation_asset, recommendation_key
from orchestration.resources import ModelStoreResource, WarehouseResource
from orchestration.serving import SERVED_MODELS, SERVING_SNAPSHOT_KEY, build_serving_snapshot_asset
from orchestration.syncs import WAREHOUSE_TAGS, build_sync_asset, build_sync_schedules, hourly_keys, on_demand_keys, sync_key
from orchestration.uploaded_cohorts import build_uploaded_cohorts_asset, uploaded_cohort_source_keys

MAIN_JOB = "cohortflow_job"

# Read once here for the raw tables and the syncs (dagster-dbt reads it for the models itself).
manifest = json.loads(dbt_project.manifest_path.read_text())
sync_declarations = load_project_declarations(manifest, DESTINATIONS_FILE)
sync_assets = [
    build_sync_asset(d, get_asset_key_for_model([cohortflow_dbt_models], d.model_name)) for d in sync_declarations
]
# Every-minute syncs run in the every-minute refresh (after the models), not in a job of their own.
sync_jobs, sync_schedules = build_sync_schedules([d for d in sync_declarations if d.cron != EVERY_MINUTE_CRON])
# raw/events is materialisable: it ingests the events POST /2/httpapi landed, upstream of stg_events.
source_specs = source_asset_specs(manifest)
landed_events_asset = build_landed_events_asset(next(s for s in source_specs if s.key == RAW_EVENTS_KEY))
# Cohort uploads the API landed, copied into raw tables before dbt reads them.
UPLOADED_COHORT_KEYS = uploaded_cohort_source_keys(manifest)
uploaded_cohorts_asset = build_uploaded_cohorts_asset(UPLOADED_COHORT_KEYS)
prediction_declarations = load_project_predictions(manifest)
prediction_assets = [
    build_prediction_asset(
        p,
        deps=[get_asset_key_for_model([cohortflow_dbt_models], m) for m in p.input_models],
        descriptions=p.feature_descriptions,
    )
    for p in prediction_declarations
]
recommendation_declarations = load_project_recommendations(manifest)
RECOMMENDATION_INPUTS = ("recommendation_events", "recommendation_items")
recommendation_assets = [
    build_recommendation_asset(
        r,
        deps=[
            get_asset_key_for_model([cohortflow_dbt_models], m)
            for m in (*RECOMMENDATION_INPUTS, *(() if r.spec.users == ACTIVE_LAST_90_DAYS else ("cohort_memberships",)))
        ],
    )
    for r in recommendation_declarations
]
serving_snapshot_asset = build_serving_snapshot_asset(
    deps=[get_asset_key_for_model([cohortflow_dbt_models], m) for m in SERVED_MODELS],
    attributes=attribute_columns(manifest),
    syncs=syncs_by_cohort(sync_declarations),
)

cohortflow_job = dg.define_asset_job(
    MAIN_JOB,
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets(*on_demand_keys(sync_declarations)),
    description="Everything, in order: dbt models (staging → marts → cohorts), then every scheduled sync "
    "(on-demand syncs run only when asked: `cohortflow sync run`, or Materialize in the UI).",
    tags=WAREHOUSE_TAGS,
)
# The hourly refresh rebuilds the models, scores the hourly predictions, refreshes the hourly
# recommendations and ships the hourly syncs in the same run; at midnight UTC it does the daily
# predictions and recommendations too (each retrains itself when its
# retraining cadence is due). Syncs of other cadences have their own jobs (sync_jobs) and ship what
# the last refresh built.
HOURLY_SELECTION = [
    RAW_EVENTS_KEY,
    *UPLOADED_COHORT_KEYS,
    *cohortflow_dbt_models.keys,
    *(prediction_key(p.name) for p in prediction_declarations if p.spec.scoring == "hourly"),
    *(recommendation_key(r.name) for r in recommendation_declarations if r.spec.refresh == "hourly"),
    *hourly_keys(sync_declarations),
    SERVING_SNAPSHOT_KEY,
]
DAILY_SELECTION = [
    *(prediction_key(p.name) for p in prediction_declarations if p.spec.scoring == "daily"),
    *(recommendation_key(r.name) for r in recommendation_declarations if r.spec.refresh == "daily"),
]


def refresh_selection(tick: datetime) -> list[dg.AssetKey]:
    """What the hourly refresh materialises at ``tick`` (UTC)."""
    return [*HOURLY_SELECTION, *DAILY_SELECTION] if tick.astimezone(timezone.utc).hour == 0 else HOURLY_SELECTION


def run_config_for(as_of: str | None = None, *, full_refresh: bool = False) -> dict:
    """Run config that pins the run's ``as_of`` (the schedules and `cohortflow run` use it)."""
    return {"ops": {DBT_ASSETS_OP: {"config": {"as_of": as_of, "full_refresh": full_refresh}}}}


# Every minute: landed events in, models rebuilt as of the tick, snapshot published, every-minute syncs out.
MINUTE_SYNCS = [d for d in sync_declarations if d.cron == EVERY_MINUTE_CRON]
MINUTE_SELECTION = [
    RAW_EVENTS_KEY,
    *UPLOADED_COHORT_KEYS,
    *cohortflow_dbt_models.keys,
    *(sync_key(d) for d in MINUTE_SYNCS),
    SERVING_SNAPSHOT_KEY,
]
events_job, events_schedule = build_events_schedule(
    MINUTE_SELECTION, run_config_for, minute_syncs=[d.spec.name for d in MINUTE_SYNCS]
)


@dg.schedule(job=cohortflow_job, cron_schedule="0 * * * *", execution_timezone="UTC", name="hourly_refresh")
def hourly_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every hour, recompute as of the tick (not of when the run starts) so backfilled ticks are exact,
    score the hourly predictions (at midnight the daily ones too), then run the hourly syncs."""
    as_of = format_as_of(context.scheduled_execution_time)
    return dg.RunRequest(
        run_key=as_of,
        run_config=run_config_for(as_of),
        tags={"as_of": as_of},
        asset_selection=refresh_selection(context.scheduled_execution_time),
    )


defs = dg.Definitions(
    assets=[*(s for s in source_specs if s.key != RAW_EVENTS_KEY), landed_events_asset, uploaded_cohorts_asset,
            cohortflow_dbt_models, *prediction_assets, *recommendation_assets, *sync_assets, serving_snapshot_asset],
    jobs=[cohortflow_job, events_job, *sync_jobs],
    schedules=[hourly_refresh, events_schedule, *sync_schedules],
    resources={"dbt": dbt_cli_resource(), "warehouse": WarehouseResource(), "model_store": ModelStoreResource()},
    # One DuckDB file admits one writer process: run the steps of a run in one process, in order.
    executor=dg.in_process_executor,
)
