"""Pick the recommender for a shop: a time-split contest with popularity as the baseline.

::

    events before as_of only (nothing later is ever read)
    [ train: before as_of - holdout_days | holdout: [as_of - holdout_days, as_of) ]
                                          └ relevant = items a user converts on here that they
                                            had never converted on before (new_items_only)

1. Every candidate of the grid (a few settings per model, :data:`DEFAULT_GRID`) is fitted on the
   train events and asked for the top ``k`` of every judged user: users with history before the
   holdout and at least one relevant item. Items they had already converted on are excluded, as
   serving excludes them.
2. Candidates are tried in grid order, which puts one setting of every model family first and the
   other settings after, so a short time budget still compares families rather than three ALS
   sizes. Before each candidate the remaining budget is checked: when it is spent, or the
   candidate's family already took longer than what is left, the candidate is skipped and the
   skip is recorded with its reason. Popularity is always evaluated: it is the baseline every
   number is read against.
3. The winner is the candidate with the highest ``recall_at_k`` (normalised recall, see
   :mod:`ml.recommend.metrics`) among those that beat popularity and whose catalogue coverage is
   at least ``min_coverage`` — accuracy alone rewards showing everyone the bestsellers
   ("popularity lock-in"), coverage alone rewards lists that rank no better than popularity. When
   no candidate does both, the best recall among those that beat popularity wins (the reason says
   the coverage was missed); when none beats popularity, the best coverage. Ties go to the earlier
   (cheaper) candidate.
4. The winner is **refitted on all events before as_of** (train + holdout) with the same
   parameters and seed, so the served model knows the latest weeks.

Coverage is measured on the judged users' lists (the users active in the holdout), so it says
how much of the catalogue the model would spread over real, current customers.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ml.recommend.candidates import Recommender, item_texts, make_recommender, needs_item_text
from ml.recommend.data import build_matrix, normalise_interactions, relevant_items, time_split, utc_timestamp
from ml.recommend.metrics import ranking_metrics

# One setting of each model family first (cheap to expensive), then the other settings, so a
# short budget still compares families rather than three sizes of one model.
DEFAULT_GRID: tuple[tuple[str, Mapping[str, Any]], ...] = (
    ("popularity", {}),
    ("trending", {}),
    ("item_cosine", {}),
    ("ease", {"l2": 500.0}),
    ("content", {}),
    ("als", {"factors": 32}),
    ("bpr", {"iterations": 50}),
    ("item_bm25", {}),
    ("ease", {"l2": 100.0}),
    ("hybrid", {"l2": 500.0, "content_weight": 0.3}),
    ("als", {"factors": 64}),
    ("als", {"factors": 64, "regularization": 0.5}),
    ("bpr", {"iterations": 150}),
)
WINNER_RULE = (
    "highest recall@k among candidates with coverage >= min_coverage; if none reaches it, the "
    "best coverage (ties: the earlier candidate)"
)
BASELINE = "popularity"


@dataclass
class Selection:
    """The chosen recommender, refitted, with everything said about the contest.

    Attributes
    ----------
    winner, label, params
        The winning model's name (``"ease"``), human label (``"ease(λ=500)"``) and full parameters.
    model
        The winner, refitted on every event before ``as_of``: pass it (or this object) to
        :func:`ml.recommend.serve.recommend_for_users`.
    candidates
        One JSON-ready dict per tried candidate, in the order tried: ``name``, ``label``,
        ``params``, the :func:`~ml.recommend.metrics.ranking_metrics` values, ``meets_coverage``,
        ``recall_vs_popularity`` (ratio), ``fit_seconds``, ``recommend_seconds``.
    skipped
        Candidates not tried: ``name``, ``label``, ``params``, ``cause`` (``"budget"`` or ``"text"``)
        and ``reason`` in words.
    reason
        The choice in words, e.g. ``"ease(λ=500): recall@10 0.21 = 3.4× popularity, coverage 31 % ≥ 25 %"``.
    timings
        Seconds: ``split``, ``search`` (fitting and judging candidates), ``refit``, ``total``, and the
        ``budget``.
    summary
        The protocol: as_of, cutoff, holdout, k, min_coverage, counts of users / items / judged
        users, seed, winner rule.
    """

    winner: str
    label: str
    params: dict[str, Any]
    model: Recommender
    candidates: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    reason: str
    timings: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)

    def metrics_table(self) -> pd.DataFrame:
        """The candidates as a DataFrame (one row each, the winner flagged)."""
        table = pd.DataFrame(self.candidates)
        if len(table):
            table["is_winner"] = table["label"] == self.label
        return table


def _format_ratio(value: float | None, baseline: float | None) -> str:
    if value is None or baseline is None:
        return "n/a"
    if baseline == 0:
        return "∞×" if value > 0 else "1.0×"
    return f"{value / baseline:.1f}×"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _reason(
    winner: dict[str, Any], baseline: dict[str, Any], *, k: int, min_coverage: float, eligible: bool
) -> str:
    recall = winner["recall_at_k"]
    base = baseline["recall_at_k"]
    recall_text = "n/a" if recall is None else f"{recall:.2f}"
    if winner["label"] == baseline["label"]:
        versus = "the baseline itself"
    else:
        versus = f"{_format_ratio(recall, base)} popularity"
    if eligible:
        return (
            f"{winner['label']}: recall@{k} {recall_text} = {versus}, "
            f"coverage {_pct(winner['coverage'])} ≥ {_pct(min_coverage)}"
        )
    return (
        f"no candidate reached coverage {_pct(min_coverage)}; {winner['label']} has the best "
        f"coverage ({_pct(winner['coverage'])}), recall@{k} {recall_text} = {versus}"
    )


def select_recommender(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
    *,
    as_of: Any,
    holdout_days: float = 30,
    k: int = 10,
    min_coverage: float = 0.25,
    time_budget_seconds: float = 30,
    seed: int = 0,
    candidate_items: Collection[Any] | None = None,
    grid: Sequence[tuple[str, Mapping[str, Any]]] | None = None,
    new_items_only: bool = True,
    half_life_days: float | None = None,
    max_judged_users: int | None = 20_000,
) -> Selection:
    """Evaluate the grid on a time split before ``as_of``, pick a winner, refit it (module docstring).

    Parameters
    ----------
    interactions, items
        Events and catalogue (see :mod:`ml.recommend.data`). ``items`` may be ``None``; the content
        and hybrid candidates are then skipped.
    as_of
        The decision time: events at or after it are dropped before anything else happens.
    holdout_days
        Length of the judging period just before ``as_of``.
    k
        List length judged (recall@k, coverage of the top k).
    min_coverage
        Share of candidate items the winner must recommend to at least one judged user.
    time_budget_seconds
        Wall-clock budget for fitting and judging candidates (the split before and the refit after
        come on top). Popularity is always evaluated.
    seed
        Seeds every model and the sample of judged users.
    candidate_items
        Items that may be recommended (``None``: every item of the catalogue and of the events).
        Relevant items outside it are dropped, since no model may show them.
    grid
        ``(name, params)`` pairs in the order to try (default :data:`DEFAULT_GRID`); popularity is
        added at the front when missing.
    new_items_only
        Relevant items exclude re-purchases (see :func:`ml.recommend.data.relevant_items`).
    half_life_days
        Time decay of the matrix weights (``None``: none).
    max_judged_users
        Above this many judged users a seeded sample of this size is judged (speed; ``None``: all).
    """
    started = time.perf_counter()
    grid = list(DEFAULT_GRID if grid is None else grid)
    if not any(name == BASELINE for name, _ in grid):
        grid.insert(0, (BASELINE, {}))
    if not 0 <= min_coverage <= 1:
        raise ValueError("min_coverage must be in [0, 1]")

    # ---- nothing at or after as_of: filter first, before any other use of the events --------
    moment = utc_timestamp(as_of)
    events = normalise_interactions(interactions)
    events = events[events["event_at"] < moment].reset_index(drop=True)
    if not len(events):
        raise ValueError(f"no interactions before as_of {moment}")
    cutoff = moment - pd.Timedelta(days=holdout_days)
    split = time_split(events, cutoff, holdout_days)
    catalogue = [] if items is None else items["item_id"].astype(str).tolist()
    train = build_matrix(split.train, reference_at=cutoff, item_ids=catalogue, half_life_days=half_life_days)
    if train.n_users == 0:
        raise ValueError(f"no interactions before the holdout starts ({cutoff}); shorten holdout_days")

    allowed = np.ones(train.n_items, dtype=bool)
    if candidate_items is not None:
        allowed[:] = False
        columns = train.item_columns(candidate_items)
        allowed[columns[columns >= 0]] = True
    candidate_columns = np.flatnonzero(allowed)

    relevant = relevant_items(split, new_items_only=new_items_only)
    pairs = pd.DataFrame(
        [(user, item) for user, values in relevant.items() for item in values], columns=["user_id", "item_id"]
    )
    pairs["row"] = train.user_rows(pairs["user_id"])
    pairs["column"] = train.item_columns(pairs["item_id"])
    known = pairs["column"].to_numpy() >= 0
    reachable = known.copy()
    reachable[known] = allowed[pairs["column"].to_numpy()[known]]
    # An item first seen in the holdout (and not in the catalogue) has no column: no model could
    # show it, but it was a real conversion, so unless candidates were restricted it stays relevant
    # (and unreachable). Items outside candidate_items are dropped: no model may show them.
    keys = np.where(reachable, pairs["column"].to_numpy(), None)
    if candidate_items is None:
        keys = np.where(known, keys, "unknown:" + pairs["item_id"].astype(str).to_numpy())
    pairs["key"] = keys
    pairs = pairs[(pairs["row"] >= 0) & pairs["key"].notna()]
    judged = pairs.groupby("row", sort=True)["key"].agg(set)
    rows = judged.index.to_numpy(dtype=np.int64)
    truth = judged.tolist()
    known_users = set(train.user_ids.tolist())
    judged_total = int(rows.size)
    if max_judged_users is not None and rows.size > max_judged_users:
        pick = np.sort(np.random.default_rng(seed).choice(rows.size, max_judged_users, replace=False))
        rows = rows[pick]
        truth = [truth[i] for i in pick]
    exclude = train.converted[rows]
    users_per_item = np.diff(train.matrix.tocsc().indptr)
    popularity = {int(c): float(users_per_item[c]) for c in candidate_columns}
    split_seconds = time.perf_counter() - started

    # ---- the contest ------------------------------------------------------------------------
    search_started = time.perf_counter()
    tried: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    family_seconds: dict[str, float] = {}
    given: dict[str, tuple[str, dict[str, Any]]] = {}
    has_text = items is not None and any(item_texts(items["item_id"].astype(str).to_numpy(), items))
    for name, params in grid:
        model = make_recommender(name, **dict(params))
        entry = {"name": name, "label": model.label, "params": dict(model.params)}
        given[model.label] = (name, dict(params))
        elapsed = time.perf_counter() - search_started
        left = time_budget_seconds - elapsed
        if needs_item_text(name) and not has_text:
            skipped.append(
                {**entry, "cause": "text", "reason": "no item text (items missing or without name/category/description)"}
            )
            continue
        if name != BASELINE:
            if left <= 0:
                skipped.append({**entry, "cause": "budget", "reason": f"time budget of {time_budget_seconds:g} s spent"})
                continue
            estimate = family_seconds.get(name)
            if estimate is not None and estimate > left:
                skipped.append(
                    {
                        **entry,
                        "cause": "budget",
                        "reason": f"{name} took {estimate:.1f} s before; only {max(left, 0):.1f} s "
                        f"of the {time_budget_seconds:g} s budget left",
                    }
                )
                continue
        fit_started = time.perf_counter()
        model.fit(train, items, seed=seed)
        fit_seconds = time.perf_counter() - fit_started
        recommend_started = time.perf_counter()
        ids, _ = model.recommend(rows, n=k, exclude=exclude, allowed=allowed)
        recommend_seconds = time.perf_counter() - recommend_started
        metrics = ranking_metrics(
            ids, truth, k=k, candidate_items=set(candidate_columns.tolist()), item_popularity=popularity
        )
        family_seconds[name] = max(family_seconds.get(name, 0.0), fit_seconds + recommend_seconds)
        tried.append(
            {
                **entry,
                **metrics,
                "meets_coverage": metrics["coverage"] is not None and metrics["coverage"] >= min_coverage,
                "fit_seconds": round(fit_seconds, 4),
                "recommend_seconds": round(recommend_seconds, 4),
            }
        )
    search_seconds = time.perf_counter() - search_started

    baseline = next(row for row in tried if row["name"] == BASELINE)
    for row in tried:
        base, value = baseline["recall_at_k"], row["recall_at_k"]
        row["recall_vs_popularity"] = (value / base) if value is not None and base else None

    # ---- the winner -------------------------------------------------------------------------
    def recall(row: dict[str, Any]) -> float:
        return -1.0 if row["recall_at_k"] is None else row["recall_at_k"]

    def coverage(row: dict[str, Any]) -> float:
        return -1.0 if row["coverage"] is None else row["coverage"]

    def beats_popularity(row: dict[str, Any]) -> bool:
        return row is not baseline and recall(row) > recall(baseline)

    # Coverage is a constraint on models that add something: a model that reaches the coverage
    # but ranks no better than popularity is not a winner (it was, once, on Online Retail).
    eligible = [row for row in tried if row["meets_coverage"] and beats_popularity(row)]
    better = [row for row in tried if beats_popularity(row)]
    if not rows.size:
        best = baseline
        reason = (
            f"no user with history converted on a new item in the {holdout_days:g}-day holdout: "
            f"nothing to judge by, so {BASELINE}"
        )
    elif eligible:
        best = max(eligible, key=lambda row: (recall(row), -tried.index(row)))
        reason = _reason(best, baseline, k=k, min_coverage=min_coverage, eligible=True)
    elif better:
        best = max(better, key=lambda row: (recall(row), -tried.index(row)))
        reason = (
            f"no candidate both beat popularity and reached coverage {_pct(min_coverage)}; "
            + _reason(best, baseline, k=k, min_coverage=min_coverage, eligible=True).replace(" ≥ ", " < ", 1)
        )
    else:
        best = max(tried, key=lambda row: (coverage(row), recall(row), -tried.index(row)))
        reason = _reason(best, baseline, k=k, min_coverage=min_coverage, eligible=False)
    if skipped:
        for_budget = sum(1 for row in skipped if row["cause"] == "budget")
        for_text = len(skipped) - for_budget
        causes = []
        if for_budget:
            causes.append(f"{for_budget} for the {time_budget_seconds:g} s time budget")
        if for_text:
            causes.append(f"{for_text} for lack of item text")
        reason += f"; skipped {', '.join(causes)}"

    # ---- refit on everything before as_of ---------------------------------------------------
    refit_started = time.perf_counter()
    full = build_matrix(events, reference_at=moment, item_ids=catalogue, half_life_days=half_life_days)
    name, params = given[best["label"]]
    model = make_recommender(name, **params)
    model.fit(full, items, seed=seed)
    refit_seconds = time.perf_counter() - refit_started

    summary = {
        "as_of": moment.isoformat(),
        "cutoff": cutoff.isoformat(),
        "holdout_days": float(holdout_days),
        "k": int(k),
        "min_coverage": float(min_coverage),
        "new_items_only": bool(new_items_only),
        "half_life_days": half_life_days,
        "seed": int(seed),
        "train_users": train.n_users,
        "train_items": train.n_items,
        "candidate_items": int(candidate_columns.size),
        "holdout_users_with_relevant": len(relevant),
        "judged_users": int(rows.size),
        "judged_users_before_sampling": judged_total,
        "holdout_users_without_history": int(sum(1 for user in relevant if user not in known_users)),
        "refit_users": full.n_users,
        "refit_items": full.n_items,
        "winner_rule": WINNER_RULE,
        "tried": [row["label"] for row in tried],
        "skipped": [row["label"] for row in skipped],
    }
    return Selection(
        winner=best["name"],
        label=best["label"],
        params=dict(best["params"]),
        model=model,
        candidates=tried,
        skipped=skipped,
        reason=reason,
        timings={
            "split": round(split_seconds, 4),
            "search": round(search_seconds, 4),
            "refit": round(refit_seconds, 4),
            "total": round(time.perf_counter() - started, 4),
            "budget": float(time_budget_seconds),
        },
        summary=summary,
    )
