"""The dbt project as Dagster assets: one asset per model, dbt tests as asset checks."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Optional

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from cohortflow.as_of import format_as_of, parse_as_of
from cohortflow.dbt_manifest import dbt_executable
from cohortflow.warehouse import DBT_PROJECT_DIR
from orchestration.resources import WarehouseResource

DBT_ASSETS_OP = "cohortflow_dbt_models"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Under `dagster dev` this re-parses the project so edits show up on reload; elsewhere a no-op
# (the CLI and tests run `cohortflow.dbt_manifest.ensure_manifest()` before importing us).
dbt_project.prepare_if_dev()


class CohortflowTranslator(DagsterDbtTranslator):
    """Groups follow the dbt folder (staging / intermediate / marts / cohorts), never a list of names.

    A model can still choose its group with ``config: meta: dagster: group: ...``.
    """

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> Optional[str]:
        explicit = super().get_group_name(dbt_resource_props)
        if explicit:
            return explicit
        if dbt_resource_props.get("resource_type") == "source":
            return dbt_resource_props.get("source_name")
        fqn = dbt_resource_props.get("fqn") or []
        # fqn = [project, folder, ..., model]: the first folder is the layer.
        return fqn[1] if len(fqn) > 2 else "models"


class DbtRunConfig(dg.Config):
    """Run-time settings of the dbt step (Launchpad / `cohortflow run` / schedules)."""

    as_of: Optional[str] = Field(
        default=None,
        description="Compute every cohort and property as of this UTC moment (ISO-8601); default: the run's start.",
    )
    full_refresh: bool = Field(default=False, description="Rebuild incremental models from scratch.")


def dbt_build_args(as_of: str | datetime | None, warehouse_path: Path, *, full_refresh: bool = False) -> list[str]:
    """The one ``dbt build`` invocation of a run.

    ``as_of`` is resolved here, once, so every model of the run sees the same instant; the
    warehouse path goes in as a var so that dbt writes exactly the file the resource names.
    """
    variables = {"as_of": format_as_of(parse_as_of(as_of)), "warehouse": str(warehouse_path)}
    args = ["build", "--vars", json.dumps(variables)]
    if full_refresh:
        args.append("--full-refresh")
    return args


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
    args = dbt_build_args(config.as_of, warehouse.resolved_path(), full_refresh=config.full_refresh)
    context.log.info(f"dbt {' '.join(args)}")
    invocation = dbt.cli(args, context=context)
    yield from invocation.stream()
    # dagster-dbt gives every invocation its own target folder; its events are consumed by now.
    shutil.rmtree(invocation.target_path, ignore_errors=True)
