"""Recommendations in Dagster: one asset per declared recommendation, and a check on its lift.

The graph runs dbt (events, catalogue) -> recommendation asset (choose, fit, recommend) -> dbt
(`recommendations`, `user_recommendations`) -> syncs, in one run: each recommendation's table is a dbt
source whose asset key is the recommendation asset's. The asset body resolves the run's as_of and
calls ``ml.recommendations.run_recommendation``; everything else comes from the declaration.
"""
# No `from __future__ import annotations`: Dagster reads the Config annotations at runtime.

from typing import Any, Optional, Sequence

import dagster as dg
from pydantic import Field

from cohortflow.as_of import parse_as_of
from cohortflow.declarations import RecommendationDeclaration
from cohortflow.text import markdown_table, number
from ml.recommendations import RecommendationRun, RecommendationRunError, run_recommendation
from orchestration.dbt import dbt_run_as_of
from orchestration.resources import WarehouseResource

RECOMMENDATIONS_GROUP = "recommendations"
LIFT_CHECK = "treatment_vs_control"
# The check warns when control converts better than treatment with this much confidence.
SIGNIFICANCE = 0.05


class RecommendationRunConfig(dg.Config):
    """Run-time settings of a recommendation asset (Launchpad, backfills, `cohortflow run`)."""

    as_of: Optional[str] = Field(
        default=None,
        description="Recommend as of this UTC moment; default: the as_of the dbt models were built for in this run.",
    )


def recommendation_key(name: str) -> dg.AssetKey:
    """``recommendations/<name>``: also the asset key of the dbt source table recommendations.<name>."""
    return dg.AssetKey([RECOMMENDATIONS_GROUP, name])


def candidates_markdown(run: RecommendationRun) -> str:
    """Every candidate beside popularity: what the choice was made on."""
    rows = [
        [c.get("label", "") + (" (chosen)" if c.get("label") == run.label else ""), number(c.get("recall_at_k"), ".3f"),
         number(c.get("recall_vs_popularity"), ".1f"), number(c.get("precision_at_k"), ".3f"),
         number(c.get("ndcg_at_k"), ".3f"), number(c.get("coverage"), ".0%"), number(c.get("fit_seconds"), ".1f")]
        for c in run.candidates
    ]
    rows += [[s.get("label"), f"skipped: {s.get('reason')}", "", "", "", "", ""] for s in run.skipped]
    return markdown_table(
        [("model", "l"), ("recall@10", "r"), ("× popularity", "r"), ("precision@10", "r"), ("NDCG@10", "r"),
         ("coverage", "r"), ("fit s", "r")],
        rows,
    )


def performance_markdown(rows: Sequence[dict[str, Any]]) -> str:
    return markdown_table(
        [("lists of", "l"), ("window", "l"), ("treatment", "r"), ("control", "r"), ("lift", "r"), ("p", "r")],
        ([f"{r['scored_as_of']:%Y-%m-%d %H:%M}", "closed" if r["window_complete"] else "open",
          f"{number(r['treatment_rate'], '.1%')} of {r['treatment_exposed']:,}",
          f"{number(r['control_rate'], '.1%')} of {r['control_exposed']:,}", number(r["lift"], "+.0%"),
          number(r["p_value"], ".3f")] for r in rows),
    )


def run_metadata(run: RecommendationRun) -> dict[str, Any]:
    """What the UI shows; numeric values are plotted over runs (the asset's Plots tab)."""
    m = run.metrics or {}
    metadata: dict[str, Any] = {
        "model": run.label,
        "model_version": run.model_version,
        "reason": run.reason,
        "users_served": dg.MetadataValue.int(run.users_served),
        "control_users": dg.MetadataValue.int(run.control_users),
        "lists_by_source": dg.MetadataValue.json(run.by_source),
        "as_of": run.as_of.isoformat(),
        "candidates": dg.MetadataValue.md(candidates_markdown(run)),
    }
    for key, name in (("recall_at_k", "recall_at_10"), ("precision_at_k", "precision_at_10"), ("ndcg_at_k", "ndcg_at_10"),
                      ("coverage", "coverage"), ("recall_vs_popularity", "recall_vs_popularity")):
        if isinstance(m.get(key), (int, float)):
            metadata[name] = dg.MetadataValue.float(float(m[key]))
    if isinstance(run.popularity.get("recall_at_k"), (int, float)):
        metadata["popularity_recall_at_10"] = dg.MetadataValue.float(float(run.popularity["recall_at_k"]))
    if run.performance:
        metadata["treatment_vs_control"] = dg.MetadataValue.md(performance_markdown(run.performance))
    metadata["selection"] = dg.MetadataValue.json({"timings": run.timings, "summary": run.summary})
    return metadata


def _check(run: RecommendationRun) -> dg.AssetCheckResult:
    closed = [r for r in run.performance if r["window_complete"]] or run.performance
    if not closed:
        return dg.AssetCheckResult(check_name=LIFT_CHECK, passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   description="no earlier lists to judge yet")
    r = closed[-1]
    worse = r["lift"] is not None and r["lift"] < 0 and r["p_value"] is not None and r["p_value"] < SIGNIFICANCE
    description = (
        f"lists of {r['scored_as_of']:%Y-%m-%d %H:%M}: treatment {number(r['treatment_rate'], '.2%')} of "
        f"{r['treatment_exposed']:,} exposed, control {number(r['control_rate'], '.2%')} of {r['control_exposed']:,}; "
        f"lift {number(r['lift'], '+.0%')}, p = {number(r['p_value'], '.3f')}"
    )
    return dg.AssetCheckResult(
        check_name=LIFT_CHECK, passed=not worse, severity=dg.AssetCheckSeverity.WARN,
        description=("control converts better: " if worse else "") + description,
        metadata={k: v for k, v in r.items() if isinstance(v, (int, float, bool)) and v is not None},
    )


def build_recommendation_asset(declaration: RecommendationDeclaration, deps: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    """Choose, fit and recommend for one declared recommendation; fail, naming why, and keep the last lists."""
    key = recommendation_key(declaration.name)
    spec = declaration.spec

    @dg.asset(
        key=key,
        deps=list(deps),
        group_name=RECOMMENDATIONS_GROUP,
        kinds={"implicit", "scikit-learn", "duckdb"},
        description=(declaration.description or declaration.label)
        + f"\n\n{spec.items_per_user} items per user from {spec.candidates.source} candidates, learnt from "
        f"{', '.join(f'{e} ×{w:g}' for e, w in spec.interactions.items())}; outcome {spec.outcome}; "
        f"{spec.control_percent:g} % control; refreshed {spec.refresh}.",
        metadata={
            "outcome": spec.outcome,
            "users": spec.users,
            "items_per_user": spec.items_per_user,
            "control_percent": spec.control_percent,
            "refresh": spec.refresh,
            "declared_in": declaration.declared_in,
            "table": f"recommendations.{declaration.name}",
        },
        check_specs=[
            dg.AssetCheckSpec(
                LIFT_CHECK, asset=key,
                description="Warns when users in the control group (random items) converted on their items "
                "significantly more than users with recommendations (two-sided Welch t-test, p < 0.05).",
            )
        ],
    )
    def _recommendation(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, config: RecommendationRunConfig
    ) -> dg.MaterializeResult:
        with warehouse.connect() as con:
            try:
                as_of = parse_as_of(config.as_of) if config.as_of else dbt_run_as_of(context)
                run = run_recommendation(con, declaration, as_of=as_of)
            except RecommendationRunError as exc:
                raise dg.Failure(description=str(exc)) from None
        context.log.info(f"{declaration.name}: {run.reason}; {run.users_served:,} users served ({run.by_source})")
        return dg.MaterializeResult(metadata=run_metadata(run), check_results=[_check(run)])

    return _recommendation
