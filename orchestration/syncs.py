"""Syncs in Dagster: one asset per declared sync, its rejected-share check, and a job + schedule per cadence.

The asset body only builds the destination and calls ``reverse_etl.run_sync``; everything it knows
about a sync comes from the declaration (``cohortflow/sync_declarations.py``).
"""
# No `from __future__ import annotations`: Dagster reads the Config annotations at runtime.

import re
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from cohortflow.sync_declarations import NAMED_SCHEDULES, DeclarationError, SyncDeclaration
from orchestration.resources import WarehouseResource
from reverse_etl import SyncError, SyncResult, run_sync

SYNC_GROUP = "syncs"
# DuckDB admits one writer process: every job carries this tag, and the instance's dagster.yaml
# limits runs with it to one at a time (a minutely sync never opens the file during the dbt run).
WAREHOUSE_TAG_KEY = "cohortflow/warehouse"
WAREHOUSE_TAGS = {WAREHOUSE_TAG_KEY: "duckdb"}
REJECTED_SHARE_CHECK = "rejected_share"
HOURLY_CRON = NAMED_SCHEDULES["hourly"]
# Run statuses during which a sync job's next tick is skipped instead of piling up in the queue.
_UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class SyncRunConfig(dg.Config):
    """Run-time switches of a sync."""

    full_resync: bool = Field(default=False, description="Send the whole audience again, not only the diff.")
    dry_run: bool = Field(default=False, description="Plan only: count adds / changes / removes, send nothing.")


def sync_key(declaration: SyncDeclaration) -> dg.AssetKey:
    """``syncs/<sync name>``."""
    return dg.AssetKey([SYNC_GROUP, declaration.spec.name])


def _metadata_value(name: str, value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if name == "destination" and isinstance(value, str):
        return dg.MetadataValue.url(value) if re.match(r"^https?://", value) else dg.MetadataValue.path(value)
    if isinstance(value, (list, tuple, dict)):
        return dg.MetadataValue.json(value)
    return str(value)


def sync_metadata(result: SyncResult) -> dict[str, Any]:
    """What the Dagster UI shows for a sync run: every count of ``SyncResult.as_metadata()`` (added,
    changed, removed, rejected, exclusions...), whether it was paused, and a few record keys."""
    metadata = {name: _metadata_value(name, value) for name, value in result.as_metadata().items()}
    metadata["paused"] = result.status == "paused"
    metadata["destination_kind"] = result.destination_kind
    metadata["sample_added"] = dg.MetadataValue.json(list(result.sample_added))
    metadata["sample_removed"] = dg.MetadataValue.json(list(result.sample_removed))
    if result.rejected_sample:
        metadata["rejected_sample"] = dg.MetadataValue.json([list(pair) for pair in result.rejected_sample])
    if result.error:
        metadata["error"] = result.error
    return {k: v for k, v in metadata.items() if v is not None}


def rejected_share(result: SyncResult) -> float:
    """Rejected records / records handed to the destination (0 when none were)."""
    return result.rows_rejected / result.rows_processed if result.rows_processed else 0.0


def rejected_share_check(declaration: SyncDeclaration, result: SyncResult) -> dg.AssetCheckResult:
    """Passes unless this run's rejected share is above the sync's ``max_rejected_share``."""
    share = rejected_share(result)
    limit = declaration.max_rejected_share
    passed = share <= limit
    if result.status == "paused":
        description = "paused: nothing was sent"
    elif result.dry_run:
        description = "dry run: nothing was sent"
    else:
        description = (
            f"{result.rows_rejected:,} of {result.rows_processed:,} records rejected ({share:.1%}); "
            f"{'within' if passed else 'above'} the limit of {limit:.1%}"
        )
    return dg.AssetCheckResult(
        check_name=REJECTED_SHARE_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "rejected_share": dg.MetadataValue.float(share),
            "max_rejected_share": dg.MetadataValue.float(limit),
            "rows_rejected": dg.MetadataValue.int(result.rows_rejected),
            "rows_processed": dg.MetadataValue.int(result.rows_processed),
            "rejected_sample": dg.MetadataValue.json([list(pair) for pair in result.rejected_sample]),
        },
    )


def _static_metadata(declaration: SyncDeclaration) -> dict[str, Any]:
    spec = declaration.spec
    metadata: dict[str, Any] = {
        "model": declaration.model_name,
        "destination": declaration.destination.name,
        "destination_type": declaration.destination.type,
        "mode": spec.sync_mode.value,
        "primary_key": ", ".join(spec.primary_key),
        "schedule": declaration.schedule,
        "consent": f"{declaration.consent_model}.{spec.consent_column}" if declaration.consent_model else "none",
        "max_rejected_share": dg.MetadataValue.float(declaration.max_rejected_share),
        "declared_in": declaration.declared_in,
    }
    if declaration.cron:
        metadata["cron"] = declaration.cron
    if declaration.suppress_models:
        metadata["suppress"] = ", ".join(declaration.suppress_models)
    if declaration.destination.unavailable:
        metadata["destination_unavailable"] = declaration.destination.unavailable
    if declaration.destination.unchecked:
        # e.g. a secret's environment variable not set where the definitions loaded: the run will tell.
        metadata["destination_unchecked"] = declaration.destination.unchecked
    return metadata


def build_sync_asset(declaration: SyncDeclaration, source_key: dg.AssetKey) -> dg.AssetsDefinition:
    """The asset that runs one sync, with a check on the share of records the destination rejected.

    A failed sync (destination unreachable, bad source, unset secret...) raises, so its run fails with
    the reason; a paused sync materialises with ``paused: true`` and sends nothing.
    """
    spec = declaration.spec
    key = sync_key(declaration)
    description = declaration.description.strip() or f"Sync {declaration.model_name} to {declaration.destination.name}."

    @dg.asset(
        key=key,
        deps=[source_key],
        group_name=SYNC_GROUP,
        kinds={declaration.destination.type},
        description=description,
        metadata=_static_metadata(declaration),
        check_specs=[
            dg.AssetCheckSpec(
                REJECTED_SHARE_CHECK,
                asset=key,
                description=f"Fails when more than {declaration.max_rejected_share:.1%} of the records a run "
                "hands to the destination are rejected (max_rejected_share).",
            )
        ],
    )
    def _sync(context: dg.AssetExecutionContext, warehouse: WarehouseResource, config: SyncRunConfig) -> dg.MaterializeResult:
        try:
            destination = declaration.destination.build(warehouse.resolved_path(), spec.name)
        except DeclarationError as exc:
            raise dg.Failure(description=f"sync {spec.name!r} cannot build its destination: {exc}") from None
        with warehouse.connect() as con:
            try:
                result = run_sync(con, spec, destination, full_resync=config.full_resync, dry_run=config.dry_run)
            except SyncError as exc:
                metadata = sync_metadata(exc.result) if exc.result is not None else {}
                raise dg.Failure(description=str(exc), metadata=metadata) from exc
        context.log.info(result.format_text())
        return dg.MaterializeResult(metadata=sync_metadata(result), check_results=[rejected_share_check(declaration, result)])

    return _sync


def _job_suffix(label: str) -> str:
    if label in NAMED_SCHEDULES:
        return label
    return "cron_" + re.sub(r"[^A-Za-z0-9]+", "_", label.replace("*", "x")).strip("_").lower()


def _skip_if_running(context: dg.ScheduleEvaluationContext, job_name: str) -> Optional[dg.SkipReason]:
    unfinished = context.instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=_UNFINISHED), limit=1)
    if unfinished:
        return dg.SkipReason(f"the previous run of {job_name} ({unfinished[0].run_id}) has not finished")
    return None


def sync_cadence_groups(declarations: Iterable[SyncDeclaration]) -> dict[str, list[SyncDeclaration]]:
    """Scheduled syncs by cron, except hourly ones (they run in the hourly refresh, after dbt)."""
    groups: dict[str, list[SyncDeclaration]] = {}
    for declaration in declarations:
        if declaration.cron is not None and declaration.cron != HOURLY_CRON:
            groups.setdefault(declaration.cron, []).append(declaration)
    return groups


def build_sync_schedules(
    declarations: Sequence[SyncDeclaration],
) -> tuple[list[Any], list[dg.ScheduleDefinition]]:
    """One job + schedule per cadence other than hourly, each selecting the syncs of that cadence.

    These jobs run syncs only: they ship what the last dbt run built. The warehouse tag puts them in
    the same one-at-a-time queue as the dbt runs, and a tick is skipped while the job's previous run
    is still queued or running, so a slow dbt run does not stack up minutely runs.
    """
    jobs: list[Any] = []
    schedules: list[dg.ScheduleDefinition] = []
    used: set[str] = set()
    for cron, group in sync_cadence_groups(declarations).items():
        label = group[0].schedule
        name = f"syncs_{_job_suffix(label)}"
        while name in used:
            name += "_"
        used.add(name)
        job = dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*(sync_key(d) for d in group)),
            description=f"Syncs scheduled {label} ({cron} UTC): {', '.join(d.spec.name for d in group)}. "
            "Ships what the last dbt run built.",
            tags=WAREHOUSE_TAGS,
        )

        def evaluate(context: dg.ScheduleEvaluationContext, _job_name: str = name):
            skip = _skip_if_running(context, _job_name)
            if skip is not None:
                return skip
            tick = context.scheduled_execution_time
            return dg.RunRequest(run_key=tick.isoformat() if tick else None)

        schedules.append(
            dg.ScheduleDefinition(
                name=f"{name}_schedule",
                job=job,
                cron_schedule=cron,
                execution_timezone="UTC",
                execution_fn=evaluate,
                description=f"Runs {name} at {cron} (UTC).",
            )
        )
        jobs.append(job)
    return jobs, schedules


def on_demand_keys(declarations: Iterable[SyncDeclaration]) -> list[dg.AssetKey]:
    """Syncs that run only when asked (CLI, UI): never part of the main job."""
    return [sync_key(d) for d in declarations if d.cron is None]


def hourly_keys(declarations: Iterable[SyncDeclaration]) -> list[dg.AssetKey]:
    """Syncs scheduled hourly: they run in the hourly refresh, right after dbt built their models."""
    return [sync_key(d) for d in declarations if d.cron == HOURLY_CRON]

