"""The dbt project as Dagster assets: one asset per model, dbt tests as asset checks."""
# No `from __future__ import annotations`: Dagster reads the Config annotations at runtime.


import shutil
from datetime import datetime, timezone
from typing import Any, Mapping

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from cohortflow.dbt_manifest import dbt_executable
from cohortflow.declarations import PYTHON_ASSET_META_KEYS
from cohortflow.warehouse import DBT_PROJECT_DIR
from orchestration.dbt_config import CohortflowTranslator, DbtRunConfig, dbt_build_invocation, environment
from orchestration.resources import WarehouseResource

DBT_ASSETS_OP = "cohortflow_dbt_models"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Under `dagster dev` this re-parses the project so edits show up on reload; elsewhere a no-op
# (the CLI and tests run `cohortflow.dbt_manifest.ensure_manifest()` before importing us).
dbt_project.prepare_if_dev()


def source_asset_specs(manifest: Mapping[str, Any]) -> list[dg.AssetSpec]:
    """The raw tables dbt reads, as external assets: shown with their docs, loaded by `cohortflow ingest`.

    dagster-dbt only uses sources as upstream keys; declaring them gives them a group, a description and
    the ingest command in the UI. Read from the manifest's sources, never from a list of names.
    """
    translator = CohortflowTranslator()
    specs = []
    for source in manifest["sources"].values():
        if is_python_asset_source(source):
            continue  # written by a Python asset of this code location: that asset is the spec
        specs.append(
            dg.AssetSpec(
                key=translator.get_asset_key(source),
                group_name=translator.get_group_name(source),
                description=source.get("description") or None,
                kinds={"duckdb"},
                metadata={"loaded_by": "cohortflow ingest", "relation": f"{source['schema']}.{source['identifier']}"},
            )
        )
    return specs


def is_python_asset_source(source: Mapping[str, Any]) -> bool:
    """A source table that one of our Python assets writes (a prediction or a recommendation), not a loaded raw table."""
    meta = (source.get("config") or {}).get("meta") or source.get("meta") or {}
    # landed_by: written by an ingest asset of what the API landed (orchestration/uploaded_cohorts.py).
    return any(key in meta for key in (*PYTHON_ASSET_META_KEYS, "landed_by"))


def _shared_config(context: dg.AssetExecutionContext) -> dict:
    """The run config given to the dbt op by its own name (``run_config_for``).

    When Python assets sit between dbt models (raw/events, uploaded cohorts, predictions,
    recommendations), Dagster splits the dbt multi-asset into several ops (``cohortflow_dbt_models``,
    ``_2``, ``_3``) with a config each; a run configures the first by name, and every split reads it.
    """
    return ((context.run_config or {}).get("ops") or {}).get(DBT_ASSETS_OP, {}).get("config") or {}


def run_as_of(context: dg.AssetExecutionContext, configured: str | None) -> str | datetime:
    """The run's as_of: the step's own config, else the run's dbt config or ``as_of`` tag, else when
    the run was created.

    Every dbt step of a run, and the Python assets between them, must see the same instant, not each
    its own "now" (nor the first split the configured moment and the others the run's creation time).
    """
    if configured:
        return configured
    shared = _shared_config(context).get("as_of") or (context.run.tags.get("as_of") if context.run else None)
    if shared:
        return shared
    record = context.instance.get_run_record_by_id(context.run_id)
    if record is None or record.create_timestamp is None:
        return datetime.now(timezone.utc)
    return record.create_timestamp.astimezone(timezone.utc)


def dbt_run_as_of(context: dg.AssetExecutionContext) -> datetime:
    """The as_of the dbt steps of this run build for (their config, else the run's creation time)."""
    from cohortflow.as_of import parse_as_of

    return parse_as_of(run_as_of(context, _shared_config(context).get("as_of")))


def dbt_cli_resource() -> DbtCliResource:
    """The dbt CLI of this environment, pointed at the project (and its profiles.yml)."""
    return DbtCliResource(project_dir=dbt_project, profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable())


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    name=DBT_ASSETS_OP,
    dagster_dbt_translator=CohortflowTranslator(),
)
def cohortflow_dbt_models(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    config: DbtRunConfig,
):
    """Build (run + test) the selected dbt models as of ``config.as_of``."""
    full_refresh = config.full_refresh or bool(_shared_config(context).get("full_refresh"))
    build = dbt_build_invocation(run_as_of(context, config.as_of), warehouse.resolved_path(), full_refresh=full_refresh)
    context.log.info(f"dbt {' '.join(build.args)} with {build.env}")
    # dagster-dbt hands the process environment to the dbt subprocess when it starts it.
    with environment(build.env):
        invocation = dbt.cli(build.args, context=context)
    yield from invocation.stream()
    # dagster-dbt gives every invocation its own target folder; its events are consumed by now.
    shutil.rmtree(invocation.target_path, ignore_errors=True)
