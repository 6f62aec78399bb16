"""Run the whole graph in process: what `cohortflow run` and `cohortflow demo` call.

The same job as the Dagster UI's ``cohortflow_job``; runs are recorded in the Dagster
instance at ``$DAGSTER_HOME`` (``.dagster_home`` by default) so they show up in the UI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from cohortflow.as_of import format_as_of, parse_as_of
from cohortflow.dbt_manifest import ensure_manifest
from cohortflow.text import number
from cohortflow.warehouse import PROJECT_ROOT, WAREHOUSE_ENV_VAR, warehouse_path

DEFAULT_DAGSTER_HOME = PROJECT_ROOT / ".dagster_home"
_INSTANCE_SETTINGS = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


class PipelineError(RuntimeError):
    """A run that did not succeed; the message names the failing step and dbt's / the sync's reason."""


@dataclass
class CohortSize:
    cohort_id: str
    cohort_name: str
    size: int
    kind: str = "behavioural"


@dataclass
class PredictionOutcome:
    """One prediction asset's run: its model's validation numbers and what it scored."""

    name: str
    metadata: dict[str, Any]
    cohorts: list[str] = field(default_factory=list)  # cohort_ids built on it (had_propensity)

    def format_text(self, sizes: dict[str, CohortSize]) -> list[str]:
        m = self.metadata
        num = lambda key, spec: number(m.get(key), spec)  # noqa: E731
        trained = "retrained, " + ("promoted" if m.get("promoted") else "NOT promoted") if m.get("retrained") else "scored only"
        lines = [
            f"    {self.name}: AUC {num('auc', '.3f')}, calibration error {num('calibration_error', '.4f')}, "
            f"base rate {num('base_rate', '.1%')} (validation) — {m.get('model', '?')} {m.get('model_version', '?')}, {trained}; "
            f"{num('scored_users', ',')} users scored, mean probability {num('mean_probability', '.1%')}"
        ]
        for cohort_id in self.cohorts:
            cohort = sizes.get(cohort_id)
            if cohort is not None:
                lines.append(f"      predictive cohort {cohort.cohort_name}: {cohort.size:,} users")
        return lines


@dataclass
class RecommendationOutcome:
    """One recommendation asset's run: the model chosen against popularity, and who got lists."""

    name: str
    metadata: dict[str, Any]

    def format_text(self) -> list[str]:
        m = self.metadata
        num = lambda key, spec: number(m.get(key), spec)  # noqa: E731
        return [
            f"    {self.name}: {m.get('model', '?')} — recall@10 {num('recall_at_10', '.3f')} against popularity's "
            f"{num('popularity_recall_at_10', '.3f')} ({num('recall_vs_popularity', '.1f')}×), catalogue coverage "
            f"{num('coverage', '.0%')}; {num('users_served', ',')} users served, {num('control_users', ',')} in the control group"
        ]


@dataclass
class SyncOutcome:
    name: str
    metadata: dict[str, Any]


@dataclass
class RunSummary:
    """What one run did, read back from the warehouse and the run's materialisations."""

    run_id: str
    as_of: str
    warehouse: Path
    assets_materialized: int
    checks_passed: int
    checks_failed: int
    cohorts: list[CohortSize] = field(default_factory=list)
    user_count: int = 0
    properties: list[str] = field(default_factory=list)
    syncs: list[SyncOutcome] = field(default_factory=list)
    predictions: list[PredictionOutcome] = field(default_factory=list)
    recommendations: list[RecommendationOutcome] = field(default_factory=list)
    log_file: Path | None = None
    #: What the raw/events asset ingested of the events POST /2/httpapi landed (its materialisation metadata).
    landed_events: dict[str, Any] | None = None

    def format_text(self) -> str:
        lines = [
            f"Run {self.run_id} as of {self.as_of} UTC on {self.warehouse}",
            f"  {self.assets_materialized} assets materialised, {self.checks_passed} checks passed (dbt tests, sync rejected shares)"
            + (f", {self.checks_failed} FAILED" if self.checks_failed else ""),
            *self._landed_lines(),
            f"  computed properties for {self.user_count:,} users ({len(self.properties)}):",
            *textwrap.wrap(", ".join(self.properties), width=100, initial_indent="    ", subsequent_indent="    "),
            "  cohorts:",
        ]
        width = max((len(c.cohort_name) for c in self.cohorts), default=0)
        lines += [
            f"    {c.cohort_name.ljust(width)}  {c.size:>8,} users" + (f"  ({c.kind})" if c.kind in ("predictive", "uploaded") else "")
            for c in self.cohorts
        ]
        if self.predictions:
            lines.append("  predictions:")
            sizes = {c.cohort_id: c for c in self.cohorts}
            for prediction in self.predictions:
                lines += prediction.format_text(sizes)
        if self.recommendations:
            lines.append("  recommendations:")
            for recommendation in self.recommendations:
                lines += recommendation.format_text()
        if self.syncs:
            lines.append("  syncs:")
            for sync in self.syncs:
                m = sync.metadata
                lines.append(
                    f"    {sync.name}: +{m.get('rows_added', 0):,} added, ~{m.get('rows_changed', 0):,} changed, "
                    f"-{m.get('rows_removed', 0):,} removed → {m.get('destination', '?')}"
                )
        if self.log_file is not None:
            lines.append(f"  log: {self.log_file}")
        return "\n".join(lines)

    def _landed_lines(self) -> list[str]:
        m = self.landed_events
        if not m or not m.get("requests_ingested"):
            return []
        return [f"  landed events (POST /2/httpapi): {m['requests_ingested']:,} request(s): {m.get('rows_read', 0):,} read, "
                f"{m.get('rows_loaded', 0):,} loaded, {m.get('rows_duplicate', 0):,} duplicate, "
                f"{m.get('rows_rejected', 0):,} rejected"]


def ensure_dagster_home() -> Path:
    """Use ``$DAGSTER_HOME``, else the repo-local one; telemetry and the first-run pop-up off."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        settings.write_text(_INSTANCE_SETTINGS)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _metadata_value(value: Any) -> Any:
    return getattr(value, "value", value)


def run_pipeline(
    as_of: str | datetime | None = None,
    *,
    warehouse: str | os.PathLike[str] | None = None,
    full_refresh: bool = False,
    verbose: bool = False,
    skip_predictions: Sequence[str] | bool = (),
) -> RunSummary:
    """Materialise every asset (landed events, dbt models, predictions, then syncs) in this process.

    Events the event endpoint (``POST /2/httpapi``) landed are ingested first (the ``raw/events`` asset).

    Parameters
    ----------
    as_of
        The moment to compute as of (default: now), resolved once for the whole run.
    warehouse
        The DuckDB file (default: ``$COHORTFLOW_WAREHOUSE`` or ``warehouse/cohortflow.duckdb``).
    full_refresh
        Rebuild incremental dbt models from scratch.
    verbose
        Stream Dagster's and dbt's step logs to the terminal; otherwise they go to a log file
        beside the warehouse (``logs/run-<time>.log``), named in the summary and in any error.
    skip_predictions
        Names of predictions not to train or score in this run (``True``: all of them). dbt then
        reads their last scores. For data a prediction cannot learn from (too few examples of its
        outcome fail its step, and with it the run); to switch one off for good, set ``enabled: false``
        on its declaration.

    Raises
    ------
    PipelineError
        When any step fails (a dbt model or test, a sync).
    """
    path = warehouse_path(warehouse)
    if not path.exists():
        raise PipelineError(f"warehouse {path} does not exist: run `cohortflow ingest` (or `cohortflow demo`) first")
    # dbt (a subprocess) and the Dagster resources both resolve the warehouse from here.
    os.environ[WAREHOUSE_ENV_VAR] = str(path)
    ensure_dagster_home()
    ensure_manifest()

    import dagster as dg

    from cohortflow.declarations import DeclarationError

    try:
        from orchestration.definitions import MAIN_JOB, defs, run_config_for
    except DeclarationError as exc:  # a sync, destination or prediction declaration that cannot work
        raise PipelineError(f"the project's declarations do not load: {exc}") from None

    as_of_text = format_as_of(parse_as_of(as_of))
    run_config = run_config_for(as_of_text, full_refresh=full_refresh)
    run_config["loggers"] = {"console": {"config": {"log_level": "DEBUG" if verbose else "INFO"}}}
    job = defs.resolve_job_def(MAIN_JOB)
    selection = None
    if skip_predictions:
        selected = set(job.asset_layer.selected_asset_keys)
        predictions = {key for key in selected if key.path[0] == "predictions"}
        known = {key.path[-1] for key in predictions}
        names = known if skip_predictions is True else set(skip_predictions)
        unknown = sorted(names - known)
        if unknown:
            raise PipelineError(f"no prediction named {', '.join(unknown)} (declared: {', '.join(sorted(known))})")
        selection = sorted(selected - {key for key in predictions if key.path[-1] in names}, key=lambda k: k.to_user_string())
    log_path = path.parent / "logs" / f"run-{datetime.now():%Y%m%dT%H%M%S}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.get() as instance, open(log_path, "w") as log:
        # dagster-dbt echoes every dbt log line to stdout and Dagster logs every step to stderr:
        # keep the terminal for the summary, and the whole story in the log file.
        with contextlib.ExitStack() as capture:
            if not verbose:
                capture.enter_context(contextlib.redirect_stdout(log))
                capture.enter_context(contextlib.redirect_stderr(log))
            result = job.execute_in_process(
                run_config=run_config, instance=instance, raise_on_error=False, tags={"as_of": as_of_text},
                asset_selection=selection,
            )
        _clean_dbt_targets()
        if not result.success:
            raise PipelineError(_failure_text(result) + f"\n  full log: {log_path}")
        materializations = result.get_asset_materialization_events()
        checks = result.get_asset_check_evaluations()
        syncs = [
            SyncOutcome(
                name=event.asset_key.path[-1],
                metadata={k: _metadata_value(v) for k, v in event.materialization.metadata.items()},
            )
            for event in materializations
            if event.asset_key.path[0] == "syncs"
        ]
        predictions = [
            PredictionOutcome(
                name=event.asset_key.path[-1],
                metadata={k: _metadata_value(v) for k, v in event.materialization.metadata.items()},
            )
            for event in materializations
            if event.asset_key.path[0] == "predictions"
        ]
        recommendations = [
            RecommendationOutcome(
                name=event.asset_key.path[-1],
                metadata={k: _metadata_value(v) for k, v in event.materialization.metadata.items()},
            )
            for event in materializations
            if event.asset_key.path[0] == "recommendations"
        ]
        landed_events = next(
            ({k: _metadata_value(v) for k, v in event.materialization.metadata.items()}
             for event in materializations if tuple(event.asset_key.path) == ("raw", "events")),
            None,
        )
        summary = RunSummary(
            run_id=result.run_id,
            as_of=as_of_text,
            warehouse=path,
            assets_materialized=len(materializations),
            checks_passed=sum(1 for c in checks if c.passed),
            checks_failed=sum(1 for c in checks if not c.passed),
            syncs=syncs,
            predictions=predictions,
            recommendations=recommendations,
            log_file=log_path,
            landed_events=landed_events,
        )
    _read_back(summary)
    return summary


def _failure_text(result: Any) -> str:
    lines = ["the run failed:"]
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            lines.append(f"  step {event.step_key}: {error.message.strip()}")
    return "\n".join(lines)


def _clean_dbt_targets() -> None:
    # dagster-dbt leaves dbt_project/target/<op>-<run>-<hash>/ behind when a step fails early.
    from cohortflow.warehouse import DBT_PROJECT_DIR

    for folder in (DBT_PROJECT_DIR / "target").glob("*-*-*"):
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def _cohorts_by_prediction() -> dict[str, list[str]]:
    """Which cohort models read which prediction (had_propensity), from the dbt manifest."""
    import json

    manifest = json.loads(ensure_manifest().read_text())
    using: dict[str, list[str]] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or node["fqn"][1] != "cohorts":
            continue
        for parent in node["depends_on"]["nodes"]:
            if parent.startswith("source.") and parent.split(".")[2] == "predictions":
                cohort_id = node["config"]["meta"].get("cohort_id", node["name"])
                using.setdefault(parent.split(".")[3], []).append(cohort_id)
    return using


def _read_back(summary: RunSummary) -> None:
    import duckdb

    con = duckdb.connect(str(summary.warehouse), read_only=True)
    try:
        summary.cohorts = [
            CohortSize(*row)
            for row in con.execute("select cohort_id, cohort_name, size, kind from marts.cohorts order by cohort_name").fetchall()
        ]
        using = _cohorts_by_prediction()
        for prediction in summary.predictions:
            prediction.cohorts = using.get(prediction.name, [])
        summary.user_count = con.execute("select count(*) from marts.user_properties").fetchone()[0]
        summary.properties = [
            row[0]
            for row in con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'marts' and table_name = 'user_properties' and column_name <> 'user_id' "
                "order by ordinal_position"
            ).fetchall()
        ]
    finally:
        con.close()
