"""How dbt maps onto Dagster: groups, run config and the build arguments (no manifest needed)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import dagster as dg
from dagster_dbt import DagsterDbtTranslator
from pydantic import Field

from cohortflow.as_of import format_as_of, parse_as_of
from cohortflow.warehouse import WAREHOUSE_ENV_VAR


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


AS_OF_ENV_VAR = "COHORTFLOW_AS_OF"


@dataclass(frozen=True)
class DbtInvocation:
    """The one ``dbt build`` of a run: its arguments and the environment it needs."""

    args: list[str]
    env: dict[str, str]


def dbt_build_invocation(
    as_of: str | datetime | None, warehouse_path: Path, *, full_refresh: bool = False
) -> DbtInvocation:
    """The one ``dbt build`` of a run.

    ``as_of`` is resolved here, once, so every model of the run sees the same instant. Both it and
    the warehouse travel as environment variables (``$COHORTFLOW_AS_OF``, ``$COHORTFLOW_WAREHOUSE``),
    not ``--vars``: dbt re-parses the whole project whenever its vars differ from the last parse
    (~1.5 s of every hourly run, docs/benchmarks.md), while the ``as_of()`` macro reads the
    environment at run time and the warehouse path stays what ``ensure_manifest`` parsed with.
    """
    args = ["build", "--full-refresh"] if full_refresh else ["build"]
    env = {AS_OF_ENV_VAR: format_as_of(parse_as_of(as_of)), WAREHOUSE_ENV_VAR: str(warehouse_path)}
    return DbtInvocation(args=args, env=env)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (for a subprocess started inside), then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
