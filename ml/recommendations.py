"""One run of a declared recommendation: choose a model, recommend for every user served, judge past lists.

``run_recommendation`` is what the Dagster asset calls (orchestration/recommendations.py only wires
it) and what tests and benchmarks call directly. In order:

1. Read, as of ``as_of``, the events the declaration weighs (``marts.recommendation_events``), the
   catalogue (``marts.recommendation_items``), the users it serves (active in the 90 days before,
   or a cohort's members) and its candidate items.
2. Choose the recommender on a time split before as_of, within the declared time budget, popularity
   beside every candidate (:func:`ml.recommend.selection.select_recommender`), and refit the winner
   on every event before as_of. The run is deterministic for the declaration's seed, so nothing
   else needs storing to reproduce it: the choice, its parameters and every candidate's metrics go
   to ``ml.recommendation_models``.
3. Recommend ``items_per_user`` items to every user served: the model for users with history, the
   declared fallback for the others, random candidate items for the control group; exclusions for
   all (:func:`ml.recommend.serve.recommend_for_users`). Written under as_of in one transaction to
   ``recommendations.<name>``; earlier runs stay (thinned to one a day after two days).
4. For every earlier run: treatment against control among the users exposed since (active after
   the lists were made), conversion on a recommended item within ``attribution_days``, the lift and
   a two-sided Welch t-test (``ml.recommendation_performance``), refreshed each run until the window
   has closed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from cohortflow.declarations import ACTIVE_LAST_90_DAYS, RecommendationDeclaration
from ml import tables

EVENTS_RELATION = "marts.recommendation_events"
ITEMS_RELATION = "marts.recommendation_items"
MEMBERSHIPS_RELATION = "marts.cohort_memberships"
COHORTS_RELATION = "marts.cohorts"
ACTIVE_DAYS = 90
EVALUATION_K = 10


class RecommendationRunError(RuntimeError):
    """The run could not produce lists; the last good lists are still in place."""


@dataclass
class RecommendationRun:
    """What one run did (the asset's metadata, the demo's lines)."""

    rec_id: str
    as_of: datetime
    model_version: str
    winner: str
    label: str
    reason: str
    users_served: int
    control_users: int
    by_source: dict[str, int]
    metrics: dict[str, Any] = field(default_factory=dict)
    popularity: dict[str, Any] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    performance: list[dict[str, Any]] = field(default_factory=list)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _item_expression(declaration: RecommendationDeclaration) -> str:
    prop = declaration.spec.item_property
    if prop == "item_id":
        return "item_id"
    return f"json_extract_string(cast(event_properties as json), {_sql_string('$.' + prop)})"


def events_sql(declaration: RecommendationDeclaration) -> str:
    """user_id, item_id, event_type, event_at, weight, is_outcome: the events the declaration weighs."""
    spec = declaration.spec
    weights = dict(spec.interactions)
    weights.setdefault(spec.outcome, 0.0)  # the outcome counts for conversions even when not weighed
    cases = " ".join(f"when {_sql_string(event)} then {float(weight)!r}" for event, weight in weights.items())
    types = ", ".join(_sql_string(event) for event in weights)
    return f"""
        select user_id, {_item_expression(declaration)} as item_id, event_type, event_at,
               case event_type {cases} end as weight,
               event_type = {_sql_string(spec.outcome)} as is_outcome
        from {EVENTS_RELATION}
        where event_type in ({types}) and user_id is not null
    """


def load_interactions(con: Any, declaration: RecommendationDeclaration, as_of: datetime) -> pd.DataFrame:
    return con.execute(
        f"select * from ({events_sql(declaration)}) as e where item_id is not null and event_at <= ?", [as_of]
    ).df()


def load_items(con: Any) -> pd.DataFrame:
    return con.execute(f"select item_id, item_name, category, price, is_in_stock from {ITEMS_RELATION}").df()


def users_served(con: Any, declaration: RecommendationDeclaration, as_of: datetime) -> list[str]:
    """Active in the 90 days before as_of (any event), or the members of the declared cohort."""
    users = declaration.spec.users
    if users == ACTIVE_LAST_90_DAYS:
        rows = con.execute(
            f"select distinct user_id from {EVENTS_RELATION} where event_at > ? and event_at <= ? and user_id is not null",
            [as_of - timedelta(days=ACTIVE_DAYS), as_of],
        ).fetchall()
    else:
        rows = con.execute(
            f"""
            select distinct m.user_id from {MEMBERSHIPS_RELATION} as m
            join {COHORTS_RELATION} as c on c.cohort_id = m.cohort_id
            where c.model_name = ?
            """,
            [users],
        ).fetchall()
    return sorted(str(r[0]) for r in rows)


def candidate_items(con: Any, declaration: RecommendationDeclaration, interactions: pd.DataFrame,
                    items: pd.DataFrame, as_of: datetime) -> list[str]:
    candidates = declaration.spec.candidates
    if candidates.source == "list":
        return list(candidates.items)
    if candidates.source == "catalogue":
        return sorted(items["item_id"].astype(str))
    # Only catalogue items (recommendation_items leaves out fees and other non-products).
    recent = interactions[(interactions["event_at"] > as_of - timedelta(days=candidates.within_days))
                          & interactions["item_id"].isin(items["item_id"])]
    counts = recent.groupby("item_id").size().sort_values(ascending=False, kind="stable")
    return [str(i) for i in counts.index[: candidates.top]]


def _version(declaration: RecommendationDeclaration, as_of: datetime, params: dict[str, Any]) -> str:
    stamp = as_of.strftime("%Y%m%dT%H%M%SZ")
    digest = hashlib.sha256(json.dumps([declaration.spec.model_dump(mode="json", by_alias=True), params],
                                       sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{declaration.name}-{stamp}-{digest}"


def _json(value: Any) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    return json.dumps(clean(value), default=str, allow_nan=False)


def _record_model(con: Any, run: RecommendationRun, now: datetime) -> None:
    m = run.metrics
    con.execute(f"delete from {tables.RECOMMENDATION_MODELS_TABLE} where rec_id = ? and as_of = ?", [run.rec_id, run.as_of])
    row = [
        run.rec_id, run.model_version, now, run.as_of, run.winner, run.label, run.reason,
        m.get("recall_at_k"), m.get("precision_at_k"), m.get("ndcg_at_k"), m.get("coverage"),
        run.popularity.get("recall_at_k"), m.get("recall_vs_popularity"),
        _json(run.candidates), _json(run.skipped), _json(run.timings), _json(run.summary),
    ]
    con.execute(f"insert into {tables.RECOMMENDATION_MODELS_TABLE} values ({', '.join('?' * len(row))})", row)


def evaluate_performance(con: Any, declaration: RecommendationDeclaration, as_of: datetime, now: datetime) -> list[dict[str, Any]]:
    """Treatment against control for every earlier run whose window started before as_of.

    Exposed: a user of the lists with any event after the run's as_of (they came back and could
    see them). Converted: an outcome event on one of their recommended items in the window
    (run as_of, run as_of + attribution_days], cut at as_of while the window is open.
    """
    from scipy import stats

    relation = tables.recommendation_relation(declaration.name)
    window = timedelta(days=declaration.spec.attribution_days)
    runs = [r[0] for r in con.execute(f"select distinct as_of from {relation} where as_of < ? order by as_of", [as_of]).fetchall()]
    done = con.execute(
        f"select scored_as_of from {tables.RECOMMENDATION_PERFORMANCE_TABLE} where rec_id = ? and window_complete",
        [declaration.name],
    ).fetchall()
    closed = {r[0] for r in done}
    events = events_sql(declaration)
    out = []
    for run_as_of in runs:
        if run_as_of in closed:
            continue
        end = min(run_as_of + window, as_of)
        frame = con.execute(
            f"""
            with lists as (select user_id, item_id, is_control from {relation} where as_of = ?),
            users as (select user_id, bool_or(is_control) as is_control from lists group by user_id),
            events as ({events}),
            exposed as (
                select distinct e.user_id from events as e join users as u on u.user_id = e.user_id
                where e.event_at > ? and e.event_at <= ?
            ),
            conversions as (
                select l.user_id, count(*) as conversions
                from lists as l
                join events as e on e.user_id = l.user_id and e.item_id = l.item_id
                where e.is_outcome and e.event_at > ? and e.event_at <= ?
                group by l.user_id
            )
            select u.user_id, u.is_control, coalesce(c.conversions, 0) as conversions
            from users as u
            join exposed as x on x.user_id = u.user_id
            left join conversions as c on c.user_id = u.user_id
            """,
            [run_as_of, run_as_of, end, run_as_of, end],
        ).df()
        treated = frame[~frame["is_control"].astype(bool)]
        control = frame[frame["is_control"].astype(bool)]
        t_conv = (treated["conversions"] > 0).astype(float).to_numpy()
        c_conv = (control["conversions"] > 0).astype(float).to_numpy()
        t_rate = float(t_conv.mean()) if t_conv.size else None
        c_rate = float(c_conv.mean()) if c_conv.size else None
        p_value = None
        if t_conv.size >= 2 and c_conv.size >= 2 and (t_conv.std() > 0 or c_conv.std() > 0):
            p_value = float(stats.ttest_ind(t_conv, c_conv, equal_var=False).pvalue)
        lift = (t_rate / c_rate - 1) if (t_rate is not None and c_rate) else None
        repeat = lambda g: float((g["conversions"] >= 2).sum() / max(1, (g["conversions"] >= 1).sum())) if len(g) else None  # noqa: E731
        row = {
            "rec_id": declaration.name, "scored_as_of": run_as_of, "window_end": run_as_of + window,
            "window_complete": end >= run_as_of + window, "evaluated_at": now,
            "treatment_exposed": int(t_conv.size), "treatment_converted": int(t_conv.sum()),
            "treatment_rate": t_rate, "treatment_repeat_rate": repeat(treated),
            "control_exposed": int(c_conv.size), "control_converted": int(c_conv.sum()),
            "control_rate": c_rate, "control_repeat_rate": repeat(control),
            "lift": lift, "p_value": p_value,
        }
        con.execute(f"delete from {tables.RECOMMENDATION_PERFORMANCE_TABLE} where rec_id = ? and scored_as_of = ?",
                    [declaration.name, run_as_of])
        con.execute(f"insert into {tables.RECOMMENDATION_PERFORMANCE_TABLE} values ({', '.join('?' * len(row))})",
                    list(row.values()))
        out.append(row)
    return out


def run_recommendation(
    con: Any,
    declaration: RecommendationDeclaration,
    *,
    as_of: datetime,
    now: datetime | None = None,
) -> RecommendationRun:
    """Choose, fit and recommend as of ``as_of``; judge earlier runs (module docstring).

    Raises
    ------
    RecommendationRunError
        Nothing to learn from (no interaction or no outcome event before as_of) or no user to serve;
        nothing was replaced.
    """
    from ml.recommend.selection import select_recommender
    from ml.recommend.serve import recommend_for_users

    as_of = _naive_utc(as_of)
    now = _naive_utc(now or datetime.now(timezone.utc))
    spec = declaration.spec
    tables.ensure_recommendation_tables(con, declaration.name)
    interactions = load_interactions(con, declaration, as_of)
    if interactions.empty or not interactions["is_outcome"].any():
        raise RecommendationRunError(
            f"recommendation {declaration.name!r} as of {as_of:%Y-%m-%d %H:%M}: no "
            f"{'interaction' if interactions.empty else repr(spec.outcome)} event with an item "
            f"({spec.item_property}) before as_of in {EVENTS_RELATION}; the last lists stay in place"
        )
    items = load_items(con)
    users = users_served(con, declaration, as_of)
    if not users:
        raise RecommendationRunError(f"recommendation {declaration.name!r} as of {as_of:%Y-%m-%d %H:%M}: "
                                     f"nobody to serve ({spec.users} is empty); the last lists stay in place")
    candidates = candidate_items(con, declaration, interactions, items, as_of)
    selection = select_recommender(
        interactions, items, as_of=pd.Timestamp(as_of), holdout_days=spec.holdout_days, k=EVALUATION_K,
        min_coverage=spec.min_coverage, time_budget_seconds=spec.time_budget_seconds, seed=spec.seed,
        candidate_items=candidates,
    )
    lists = recommend_for_users(
        selection, users, n=spec.items_per_user, candidate_items=candidates, exclude_items=spec.exclude.items,
        exclude_converted=spec.exclude.converted, in_stock_only=spec.exclude.out_of_stock, items=items,
        control_share=spec.control_percent / 100, seed=spec.seed, fallback=spec.fallback, min_history=spec.min_history,
    )
    version = _version(declaration, as_of, selection.params)
    out = pd.DataFrame({
        "rec_id": declaration.name,
        "user_id": lists["user_id"].astype(str),
        "rank": lists["rank"].astype(np.int32),
        "item_id": lists["item_id"].astype(str),
        "score": lists["score"].astype(float),
        "is_control": lists["is_control"].astype(bool),
        "source": lists["source"].astype(str),
        "model_version": version,
        "generated_at": pd.Timestamp(now),
        "as_of": pd.Timestamp(as_of),
    })
    tables.replace_run(con, tables.recommendation_relation(declaration.name), out, as_of)

    by_name = {c["label"]: c for c in selection.candidates}
    winner = by_name.get(selection.label, {})
    popularity = next((c for c in selection.candidates if c["name"] == "popularity"), {})
    served = lists.drop_duplicates("user_id")
    run = RecommendationRun(
        rec_id=declaration.name, as_of=as_of, model_version=version, winner=selection.winner, label=selection.label,
        reason=selection.reason, users_served=int(served["user_id"].nunique()),
        control_users=int(served["is_control"].sum()),
        by_source={str(k): int(v) for k, v in served["source"].value_counts().items()},
        metrics=winner, popularity=popularity, candidates=selection.candidates, skipped=selection.skipped,
        timings=selection.timings, summary=selection.summary,
    )
    _record_model(con, run, now)
    run.performance = evaluate_performance(con, declaration, as_of, now)
    return run
