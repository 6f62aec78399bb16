"""How dbt maps onto Dagster: groups, run config and the build arguments (no manifest needed)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Optional

import dagster as dg
from dagster_dbt import DagsterDbtTranslator
from pydantic import Field

from cohortflow.as_of import format_as_of, parse_as_of


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
