"""Events the event endpoint landed, in Dagster: ``raw/events`` as an asset, and the every-minute refresh.

``raw/events`` is the table every ingest writes; ``cohortflow ingest`` loads files into it from the
command line, and materialising this asset loads what ``POST /2/httpapi`` landed since the last run
(``cohortflow.ingest.landing.ingest_landed``). Being a real asset upstream of ``stg_events``, it runs
first in every run that builds the models: ``cohortflow run``, the hourly refresh and the every-minute
refresh below, which is what makes a posted event reach its cohorts, the serving snapshot and the
every-minute syncs within a minute or two.
"""
# No `from __future__ import annotations`: Dagster reads the annotations at runtime.

from typing import Any, Callable, Optional, Sequence

import dagster as dg

from cohortflow.as_of import format_as_of
from cohortflow.ingest.landing import has_landed, ingest_landed, landing_dir_for
from cohortflow.sync_declarations import NAMED_SCHEDULES
from orchestration.resources import WarehouseResource
from orchestration.syncs import WAREHOUSE_TAGS, _skip_if_running

RAW_EVENTS_KEY = dg.AssetKey(["raw", "events"])
EVENTS_JOB = "events_every_minute"
EVENTS_SCHEDULE = "events_every_minute_schedule"
EVERY_MINUTE_CRON = NAMED_SCHEDULES["every_minute"]


def _metadata(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, dict):
        return dg.MetadataValue.json(value)
    return str(value)


def build_landed_events_asset(source: dg.AssetSpec) -> dg.AssetsDefinition:
    """``raw/events`` (the dbt source's key, group and docs), materialised by ingesting the landed events."""

    @dg.asset(
        key=source.key,
        group_name=source.group_name,
        kinds={"duckdb"},
        description=(source.description or "Raw events.")
        + "\n\nLoaded by `cohortflow ingest` (files) and, when materialised, from the events the event "
        "endpoint (`POST /2/httpapi`) landed in `<warehouse folder>/landing/events` (each event once).",
        metadata={**source.metadata, "loaded_by": "cohortflow ingest; this asset: events landed by POST /2/httpapi"},
    )
    def landed_events(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        path = warehouse.resolved_path()
        with warehouse.connect() as con:
            result = ingest_landed(con, landing_dir_for(path))
        context.log.info(result.format_text())
        return dg.MaterializeResult(metadata={k: _metadata(v) for k, v in result.as_metadata().items()})

    return landed_events


def build_events_schedule(
    selection: Sequence[dg.AssetKey],
    run_config: Callable[[str], dict],
    *,
    minute_syncs: Sequence[str] = (),
) -> tuple[Any, dg.ScheduleDefinition]:
    """The every-minute refresh: ingest landed events, rebuild the models, run the every-minute syncs.

    A tick is skipped while the previous one is still queued or running (the warehouse admits one run
    at a time), and when nothing was landed and no sync is due every minute.
    """
    job = dg.define_asset_job(
        EVENTS_JOB,
        selection=dg.AssetSelection.assets(*selection),
        description="Every minute: ingest the events POST /2/httpapi landed, rebuild the dbt models as of the "
        "tick and publish what they change"
        + (f", then run the every-minute syncs ({', '.join(minute_syncs)})." if minute_syncs else "."),
        tags=WAREHOUSE_TAGS,
    )

    def evaluate(context: dg.ScheduleEvaluationContext):
        skip: Optional[dg.SkipReason] = _skip_if_running(context, EVENTS_JOB)
        if skip is not None:
            return skip
        if not minute_syncs and not has_landed(landing_dir_for()):
            return dg.SkipReason("no events landed since the last run, and no sync runs every minute")
        as_of = format_as_of(context.scheduled_execution_time)
        return dg.RunRequest(run_key=as_of, run_config=run_config(as_of), tags={"as_of": as_of})

    schedule = dg.ScheduleDefinition(
        name=EVENTS_SCHEDULE,
        job=job,
        cron_schedule=EVERY_MINUTE_CRON,
        execution_timezone="UTC",
        execution_fn=evaluate,
        description="Every minute (UTC): ingests what the event endpoint landed and refreshes the models "
        "and the every-minute syncs; skipped when nothing landed.",
    )
    return job, schedule
