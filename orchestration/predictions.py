"""Predictions in Dagster: one asset per declared prediction, and a check on how its scores did.

The graph runs dbt features -> prediction asset (train when due, score) -> dbt predictive cohorts ->
syncs, in one run: each prediction's table is a dbt source whose asset key is the prediction asset's
(CohortflowTranslator), so Dagster splits the dbt step around it. The asset body only resolves the
run's as_of and calls ``ml.predictions.run_prediction``; everything it knows comes from the
declaration (cohortflow/declarations.py).
"""
# No `from __future__ import annotations`: Dagster reads the Config annotations at runtime.

from typing import Any, Optional, Sequence

import dagster as dg
from pydantic import Field

from cohortflow.as_of import parse_as_of
from cohortflow.declarations import PredictionDeclaration
from cohortflow.text import markdown_table, number
from ml.examples import ExamplesError, features_as_of
from ml.predictions import PredictionRun, PredictionRunError, degradation, run_prediction
from orchestration.resources import ModelStoreResource, WarehouseResource

PREDICTIONS_GROUP = "predictions"
REALISED_CHECK = "realised_performance"


class PredictionRunConfig(dg.Config):
    """Run-time settings of a prediction asset (Launchpad, backfills, `cohortflow run`)."""

    as_of: Optional[str] = Field(
        default=None,
        description="Score as of this UTC moment; default: the as_of marts.prediction_features was built for in this run.",
    )
    retrain: Optional[bool] = Field(
        default=None, description="true: train a new model now; false: only score; default: retrain when due."
    )


def prediction_key(name: str) -> dg.AssetKey:
    """``predictions/<name>``: also the asset key of the dbt source table predictions.<name>."""
    return dg.AssetKey([PREDICTIONS_GROUP, name])


def _bar(value: float, width: int = 20) -> str:
    filled = max(0, min(width, round(value * width)))
    return "█" * filled + "·" * (width - filled)


def calibration_markdown(table: Sequence[dict[str, Any]]) -> str:
    """Predicted against observed per probability bin, with bars a marketer can read at a glance."""
    return markdown_table(
        [("bin", "l"), ("users", "r"), ("predicted", "r"), ("observed", "r"), ("predicted (bar)", "l"), ("observed (bar)", "l")],
        ([row["bin"], f"{row['examples']:,}", f"{row['mean_probability']:.1%}", f"{row['observed_rate']:.1%}",
          f"`{_bar(row['mean_probability'])}`", f"`{_bar(row['observed_rate'])}`"] for row in table),
    )


def percentile_markdown(curve: Sequence[dict[str, Any]]) -> str:
    """Probability against percentile: "top 10 %" can still mean a low probability."""
    return markdown_table(
        [("percentile", "r"), ("probability", "r"), ("users", "r"), ("", "l")],
        ([row["percentile"], f"{row['min_probability']:.1%}–{row['max_probability']:.1%}", f"{row['users']:,}",
          f"`{_bar(row['max_probability'])}`"] for row in curve),
    )


def candidates_markdown(candidates: dict[str, dict[str, Any]], winner: str) -> str:
    return markdown_table(
        [("model", "l"), ("AUC", "r"), ("log loss", "r"), ("Brier", "r"), ("calibration error", "r"), ("top-decile lift", "r")],
        ([name + (" (chosen)" if name == winner else ""), number(m.get("auc"), ".3f"), number(m.get("log_loss"), ".4f"),
          number(m.get("brier"), ".4f"), number(m.get("calibration_error"), ".4f"), number(m.get("top_decile_lift"), ".2f")]
         for name, m in candidates.items()),
    )


def run_metadata(run: PredictionRun) -> dict[str, Any]:
    """What the UI shows for a run; numeric values are plotted over runs by the asset's Plots tab."""
    m = run.metrics or {}
    metadata: dict[str, Any] = {
        "model_version": run.model_version,
        "model": run.model_name,
        "retrained": run.retrained,
        "promoted": run.promoted,
        "reason": run.reason,
        "scored_users": dg.MetadataValue.int(run.scored_users),
        "mean_probability": dg.MetadataValue.float(run.mean_probability),
        "as_of": run.as_of.isoformat(),
    }
    for key in ("auc", "log_loss", "brier", "calibration_error", "base_rate", "top_decile_lift"):
        if isinstance(m.get(key), (int, float)):
            metadata[key] = dg.MetadataValue.float(float(m[key]))
    if run.calibration_table:
        metadata["calibration"] = dg.MetadataValue.md(calibration_markdown(run.calibration_table))
    if run.percentile_curve:
        metadata["probability_by_percentile"] = dg.MetadataValue.md(percentile_markdown(run.percentile_curve))
    if run.candidates:
        metadata["candidates"] = dg.MetadataValue.md(candidates_markdown(run.candidates, run.model_name))
    if run.importance:
        metadata["what_matters"] = dg.MetadataValue.md("\n".join(f"- {i['sentence']}" for i in run.importance))
    if m.get("tpr_fpr"):
        metadata["tpr_fpr"] = dg.MetadataValue.json(m["tpr_fpr"])
    if run.summary:
        metadata["training"] = dg.MetadataValue.json(run.summary)
    if run.realised:
        metadata["realised"] = dg.MetadataValue.json(run.realised)
    if run.skipped_cutoffs:
        metadata["skipped_cutoffs"] = dg.MetadataValue.json(run.skipped_cutoffs)
    return metadata


def _check(con: Any, declaration: PredictionDeclaration) -> dg.AssetCheckResult:
    found = degradation(con, declaration.name)
    if found is None:
        return dg.AssetCheckResult(
            check_name=REALISED_CHECK, passed=True, severity=dg.AssetCheckSeverity.WARN,
            description=f"no scored as_of has a finished {declaration.spec.within_days}-day horizon yet",
        )
    description = (
        f"scores of {found['scored_as_of']:%Y-%m-%d %H:%M}: realised AUC {found['realised_auc'] if found['realised_auc'] is None else round(found['realised_auc'], 3)} "
        f"against {found['validation_auc'] if found['validation_auc'] is None else round(found['validation_auc'], 3)} on validation; "
        f"predicted {found['mean_probability']:.1%}, realised {found['realised_rate']:.1%} of {found['users']:,} users"
    )
    return dg.AssetCheckResult(
        check_name=REALISED_CHECK, passed=not found["degraded"], severity=dg.AssetCheckSeverity.WARN,
        description=("degraded: " if found["degraded"] else "") + description,
        metadata={k: v for k, v in found.items() if isinstance(v, (int, float, str, bool)) and v is not None},
    )


def build_prediction_asset(
    declaration: PredictionDeclaration, deps: Sequence[dg.AssetKey], descriptions: dict[str, str]
) -> dg.AssetsDefinition:
    """Train (when due) and score one prediction; fail, naming why, and keep the last scores otherwise."""
    key = prediction_key(declaration.name)
    spec = declaration.spec

    @dg.asset(
        key=key,
        deps=list(deps),
        group_name=PREDICTIONS_GROUP,
        kinds={"scikit-learn", "duckdb"},
        description=(declaration.description or declaration.label)
        + f"\n\nOutcome: {spec.outcome.describe()} within {spec.within_days} days; starting cohort: "
        f"{spec.starting_cohort}; scored {spec.scoring}, retrained {spec.retraining}.",
        metadata={
            "outcome": spec.outcome.describe(),
            "within_days": spec.within_days,
            "starting_cohort": spec.starting_cohort,
            "scoring": spec.scoring,
            "retraining": spec.retraining,
            "declared_in": declaration.declared_in,
            "table": f"predictions.{declaration.name}",
        },
        check_specs=[
            dg.AssetCheckSpec(
                REALISED_CHECK, asset=key,
                description="Warns when the scores of a past as_of, once their horizon has passed, ranked users "
                "much worse (AUC more than 0.05 lower) than the model promised on validation.",
            )
        ],
    )
    def _prediction(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        model_store: ModelStoreResource,
        config: PredictionRunConfig,
    ) -> dg.MaterializeResult:
        with warehouse.connect() as con:
            try:
                as_of = parse_as_of(config.as_of) if config.as_of else features_as_of(con)
                run = run_prediction(
                    con, declaration, as_of=as_of, store=model_store.store(warehouse.resolved_path()),
                    descriptions=descriptions, retrain=config.retrain,
                )
            except (PredictionRunError, ExamplesError) as exc:
                raise dg.Failure(description=str(exc)) from None
            check = _check(con, declaration)
        context.log.info(
            f"{declaration.name}: scored {run.scored_users:,} users with {run.model_version} "
            f"({'retrained; ' + run.reason if run.retrained else run.reason})"
        )
        return dg.MaterializeResult(metadata=run_metadata(run), check_results=[check])

    return _prediction
