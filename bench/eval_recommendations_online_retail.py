"""Quality of the ``products_for_you`` recommendation on the real UCI Online Retail data, every candidate beside it.

Protocol, for each test date T (midnight UTC; T + 30 days ≤ 2011-12-09, the data's last day):

1. **The product's inputs as of T.** A fresh copy of the ingested raw warehouse (every invoice line of a
   registered customer is a ``purchase`` event with item_id = StockCode; ``raw.items`` holds one row per
   StockCode, item_name = its most frequent Description), then ``dbt build --select +recommendation_events
   +recommendation_items --vars '{as_of: T}'``. The declaration is read from that build's manifest. Then
   exactly what ``ml.recommendations.run_recommendation`` reads: ``load_interactions(con, declaration, T)``
   (purchases weigh 5; Online Retail has no views or carts), ``load_items`` (the catalogue
   ``marts.recommendation_items``), ``users_served`` and ``candidate_items`` (``from: catalogue``).
2. **The product's choice.** ``select_recommender`` called with the arguments ``run_recommendation`` passes
   (as_of = T, the declaration's holdout_days 30, k 10, min_coverage 0.25, time budget 30 s, seed 0,
   candidate_items = the catalogue). It judges the grid on its own holdout, the 30 days *before* T
   ([T − 30 d, T)), trained on the events before T − 30 d, and refits the winner on every event before
   T. Nothing at or after T is read by it: the test window below is untouched.
3. **Test window [T, T + 30 d).** Relevant items of a customer = the items they buy (``purchase``) in the
   window and had never bought before T (the product's ``new_items_only``: serving excludes items already
   bought). Read from a second "oracle" build as of 2011-12-10 (every event visible), through the same
   ``events_sql``. Judged customers = those with an event before T (a row in the model's matrix) and at
   least one relevant item: the same rule ``select_recommender`` uses on its holdout, here after T.
   Customers with no history before T get the fallback list in the product and are not judged here
   (counted in the output).
4. **Lists.** Every candidate of the library's default grid (``DEFAULT_GRID``, 13 settings) is fitted on
   every event before T (the matrix the refitted winner has: same catalogue columns, same seed) and asked
   for the top 10 of each judged customer, with the serving exclusions (items the customer already bought;
   only candidate items). The **chosen** row is the refitted winner of step 2 itself (its lists are
   checked to equal the grid row of the same label).
5. **Metrics** (``ml.recommend.metrics.ranking_metrics``, averaged over judged customers):
   precision@10 = hits / 10; **recall@10** = hits / min(10, |relevant|), the library's *normalised*
   recall (the one the product selects by and the issue's target is stated in); **plain recall@10** =
   hits / |relevant|; NDCG@10 with binary gains (ideal = min(10, |relevant|) hits on top); **coverage** =
   share of the candidate catalogue recommended to at least one judged customer.

Targets (issue 11): the chosen model's recall@10 ≥ 3 × popularity's, with coverage ≥ 25 %.

The catalogue as the dbt view gives it is *not* cut at T: ``raw.items`` is derived from the whole file, so
at T it already holds the stock codes first sold after T; it also holds 112 lower-case duplicates of real
codes, 17 charge / fee / voucher codes with category ``non_product``, and stock codes only guests bought.
That is what the product reads in this backtest, so it is the main protocol; ``--investigate`` measures
the difference (the selection rerun on the items with an event before T; coverage over those).

``--investigate`` adds, per T, prototypes in this script only (``ml/`` and the dbt models unchanged):
the selection rule (the holdout's best recall with no coverage floor, the holdout ranking against the
test ranking; the product's selection rerun with the catalogue cut at T, i.e. candidates = items with an
event before T), which grid settings meet the targets on the test window, history length and time decay
(the last 90 / 180 days only, customers without an event there getting popularity's list;
``half_life_days`` 30 / 90) and the weighting of the matrix (each customer × item once; log1p of the
summed weights) for the main model families and EASE with λ = 1000, the strength of
popularity on this data (a 7-day window; relevant items nobody had bought before T; history sizes), and
non-product items (postage, "Manual", fees) in the lists.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/eval_recommendations_online_retail.py
        [--data ../shared/data/online_retail/online_retail.csv.gz] [--workdir /tmp/cohortflow-eval-recommendations]
        [--test-dates 2011-09-01,2011-10-01,2011-11-01] [--investigate] [--json results.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: implicit is slow with OpenBLAS threads

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from cohortflow.declarations import RecommendationDeclaration, load_project_recommendations  # noqa: E402
from cohortflow.ingest import ingest_files  # noqa: E402
from cohortflow.warehouse import connect  # noqa: E402
from ml.recommend.candidates import make_recommender  # noqa: E402
from ml.recommend.data import InteractionMatrix, build_matrix, relevant_items, time_split  # noqa: E402
from ml.recommend.metrics import ranking_metrics  # noqa: E402
from ml.recommend.selection import DEFAULT_GRID, select_recommender  # noqa: E402
from ml.recommendations import (EVALUATION_K, candidate_items, load_interactions, load_items,  # noqa: E402
                                users_served)

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DBT = Path(sys.executable).parent / "dbt"
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"
DEFAULT_DATES = "2011-09-01,2011-10-01,2011-11-01"
RECOMMENDATION = "products_for_you"
TEST_DAYS = 30
# The data's last invoice is 2011-12-09 12:50 (London): the oracle build sees everything.
ORACLE_AS_OF = datetime(2011, 12, 10)
LAST_DAY = datetime(2011, 12, 9)
RATIO_TARGET = 3.0
COVERAGE_TARGET = 0.25
INGEST_NOW = datetime(2026, 12, 5)  # the loader's clock: fixed, so the warehouse is reproducible
# Model families probed for history length and decay (--investigate): one setting each.
PROBES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("item_cosine", {}),
    ("item_bm25", {}),
    ("ease", {"l2": 500.0}),
    ("ease", {"l2": 1000.0}),
    ("als", {"factors": 64}),
    ("bpr", {"iterations": 150}),
)
# (label, keep the last N days only, half_life_days, weighting of the summed matrix values)
MATRIX_VARIANTS: tuple[tuple[str, int | None, float | None, str | None], ...] = (
    ("all history (product)", None, None, None),
    ("last 180 days", 180, None, None),
    ("last 90 days", 90, None, None),
    ("half-life 90 d", None, 90.0, None),
    ("half-life 30 d", None, 30.0, None),
    ("distinct items", None, None, "distinct"),
    ("log1p weights", None, None, "log1p"),
    ("log1p, half-life 30 d", None, 30.0, "log1p"),
)


# ------------------------------------------------------------------------------------------------
# Warehouse and dbt


def raw_warehouse(workdir: Path, data: Path) -> Path:
    """The Online Retail file ingested once into ``workdir/raw_events.duckdb`` (reused when complete)."""
    path = workdir / "raw_events.duckdb"  # not raw.duckdb: its catalog name would clash with the schema raw
    marker = workdir / "raw_events.complete"
    if marker.exists() and marker.read_text().strip() == str(data.resolve()) and path.exists():
        return path
    path.unlink(missing_ok=True)
    con = connect(path)
    try:
        summary = ingest_files(con, [data], "online-retail", now=INGEST_NOW)
        con.execute("checkpoint")
    finally:
        con.close()
    loaded = sum(f.rows_loaded for f in summary.files)
    print(f"ingested {data.name}: {loaded:,} events", flush=True)
    marker.write_text(str(data.resolve()))
    return path


def build(raw: Path, warehouse: Path, scratch: Path, as_of: datetime) -> float:
    """Copy the raw warehouse to ``warehouse`` and build the recommendation inputs as of ``as_of``; seconds."""
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(raw, warehouse)
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "COHORTFLOW_WAREHOUSE": str(warehouse)}
    env.pop("COHORTFLOW_AS_OF", None)  # the --vars below say it
    args = [str(DBT), "build", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
            "--select", "+recommendation_events", "+recommendation_items",
            "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs"),
            "--vars", json.dumps({"as_of": as_of.strftime("%Y-%m-%dT%H:%M:%SZ")})]
    started = time.perf_counter()
    result = subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"dbt build as of {as_of} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def declaration_from(scratch: Path) -> RecommendationDeclaration:
    manifest = json.loads((scratch / "target" / "manifest.json").read_text())
    by_name = {d.name: d for d in load_project_recommendations(manifest)}
    if RECOMMENDATION not in by_name:
        raise SystemExit(f"recommendation {RECOMMENDATION!r} is not declared (have {sorted(by_name)})")
    return by_name[RECOMMENDATION]


# ------------------------------------------------------------------------------------------------
# Judging


class Judge:
    """The judged customers of one test window and their relevant items, as matrix columns of ``data``."""

    def __init__(self, data: InteractionMatrix, allowed: np.ndarray, relevant: dict[str, list[str]]) -> None:
        self.data = data
        self.allowed = allowed
        pairs = pd.DataFrame([(u, i) for u, items in relevant.items() for i in items], columns=["user_id", "item_id"])
        pairs["row"] = data.user_rows(pairs["user_id"])
        pairs["column"] = data.item_columns(pairs["item_id"])
        known = pairs["column"].to_numpy() >= 0
        reachable = known.copy()
        reachable[known] = allowed[pairs["column"].to_numpy()[known]]
        # As select_recommender does with candidate_items given: an item outside the candidates is
        # dropped (no model may show it). With the catalogue as candidates that drops nothing here.
        self.dropped_pairs = int((~reachable).sum())
        self.users_without_history = int(pairs.loc[pairs["row"] < 0, "user_id"].nunique())
        kept = pairs[(pairs["row"] >= 0) & reachable]
        grouped = kept.groupby("row", sort=True)["column"].apply(lambda c: {int(x) for x in c})
        self.rows = grouped.index.to_numpy(dtype=np.int64)
        self.truth = grouped.tolist()
        self.exclude = data.converted[self.rows]
        self.candidate_columns = set(np.flatnonzero(allowed).tolist())
        users_per_item = np.diff(data.matrix.tocsc().indptr)
        self.popularity = {c: float(users_per_item[c]) for c in self.candidate_columns}
        self.relevant_users = len(relevant)
        self.pairs = kept

    def lists(self, model: Any) -> np.ndarray:
        ids, _ = model.recommend(self.rows, n=EVALUATION_K, exclude=self.exclude, allowed=self.allowed)
        return ids

    def metrics(self, ids: np.ndarray, candidate_columns: set[int] | None = None) -> dict[str, Any]:
        return ranking_metrics(ids, self.truth, k=EVALUATION_K,
                               candidate_items=self.candidate_columns if candidate_columns is None else candidate_columns,
                               item_popularity=self.popularity)


def fit_and_judge(name: str, params: dict[str, Any], data: InteractionMatrix, items: pd.DataFrame, judge: Judge,
                  seed: int) -> tuple[dict[str, Any], np.ndarray]:
    model = make_recommender(name, **params)
    started = time.perf_counter()
    model.fit(data, items, seed=seed)
    fitted = time.perf_counter()
    ids = judge.lists(model)
    row = {"name": name, "label": model.label, "params": dict(model.params), **judge.metrics(ids),
           "fit_seconds": round(fitted - started, 3), "recommend_seconds": round(time.perf_counter() - fitted, 3)}
    return row, ids


def add_ratios(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> None:
    base = baseline["recall_at_k"]
    for row in rows:
        value = row["recall_at_k"]
        row["recall_vs_popularity"] = (value / base) if value is not None and base else None
        row["meets_targets"] = bool(row["recall_vs_popularity"] is not None and row["recall_vs_popularity"] >= RATIO_TARGET
                                    and row["coverage"] is not None and row["coverage"] >= COVERAGE_TARGET)


# ------------------------------------------------------------------------------------------------
# One test date


def evaluate_date(t: datetime, *, raw: Path, workdir: Path, oracle_con: Any, investigate: bool) -> dict[str, Any]:
    folder = workdir / f"as_of-{t:%Y%m%d}"
    shutil.rmtree(folder, ignore_errors=True)
    build_seconds = build(raw, folder / "cohortflow.duckdb", folder / "dbt", t)
    declaration = declaration_from(folder / "dbt")
    spec = declaration.spec
    con = duckdb.connect(str(folder / "cohortflow.duckdb"), read_only=True)
    try:
        # ---- exactly what run_recommendation reads and calls ----------------------------------
        interactions = load_interactions(con, declaration, t)
        items = load_items(con)
        users = users_served(con, declaration, t)
        candidates = candidate_items(con, declaration, interactions, items, t)
    finally:
        con.close()
    started = time.perf_counter()
    selection = select_recommender(
        interactions, items, as_of=pd.Timestamp(t), holdout_days=spec.holdout_days, k=EVALUATION_K,
        min_coverage=spec.min_coverage, time_budget_seconds=spec.time_budget_seconds, seed=spec.seed,
        candidate_items=candidates,
    )
    selection_seconds = time.perf_counter() - started

    # ---- the test window, from the oracle build -------------------------------------------------
    end = t + timedelta(days=TEST_DAYS)
    everything = load_interactions(oracle_con, declaration, end)
    split = time_split(everything, t, TEST_DAYS)
    before_own = int((pd.to_datetime(interactions["event_at"]) < pd.Timestamp(t)).sum())
    if len(split.train) != before_own:
        raise SystemExit(f"T={t:%Y-%m-%d}: the oracle build has {len(split.train):,} events before T, "
                         f"the build as of T {before_own:,}")
    relevant = relevant_items(split, new_items_only=True)

    data = selection.model.data  # every event before T, the catalogue's columns: what the winner was refitted on
    allowed = np.zeros(data.n_items, dtype=bool)
    columns = data.item_columns(candidates)
    allowed[columns[columns >= 0]] = True
    judge = Judge(data, allowed, relevant)

    # ---- every candidate of the default grid, and the chosen model itself ----------------------
    seed = spec.seed
    grid_rows: list[dict[str, Any]] = []
    lists: dict[str, np.ndarray] = {}
    for name, params in DEFAULT_GRID:
        row, ids = fit_and_judge(name, dict(params), data, items, judge, seed)
        grid_rows.append(row)
        lists[row["label"]] = ids
    chosen_ids = judge.lists(selection.model)
    chosen = {"name": selection.winner, "label": selection.label, "params": dict(selection.params),
              **judge.metrics(chosen_ids)}
    popularity = next(r for r in grid_rows if r["name"] == "popularity")
    add_ratios(grid_rows, popularity)
    add_ratios([chosen], popularity)
    same = lists.get(selection.label)
    chosen["equals_grid_row"] = bool(same is not None and np.array_equal(same, chosen_ids))

    holdout = {c["label"]: c for c in selection.candidates}
    for row in grid_rows:
        h = holdout.get(row["label"])
        row["holdout"] = None if h is None else {k: h.get(k) for k in (
            "recall_at_k", "plain_recall_at_k", "precision_at_k", "ndcg_at_k", "coverage", "recall_vs_popularity",
            "meets_coverage")}

    result: dict[str, Any] = {
        "test_date": t.strftime("%Y-%m-%d"),
        "test_end": end.strftime("%Y-%m-%d"),
        "declaration": spec.model_dump(mode="json", by_alias=True),
        "build_seconds": round(build_seconds, 1),
        "selection_seconds": round(selection_seconds, 1),
        "selection": {"winner": selection.winner, "label": selection.label, "reason": selection.reason,
                      "summary": selection.summary, "timings": selection.timings, "skipped": selection.skipped},
        "data": {
            "events_before_t": int(len(split.train)),
            "customers_before_t": int(data.n_users),
            "catalogue_items": int(len(items)),
            "candidate_items": int(allowed.sum()),
            "users_served": len(users),
            "test_purchases": int(len(split.test)),
            "test_customers_with_relevant": judge.relevant_users,
            "test_customers_without_history": judge.users_without_history,
            "judged_customers": int(judge.rows.size),
            "judged_and_served": int(np.isin(data.user_ids[judge.rows], np.asarray(users, dtype=object)).sum()),
            "relevant_pairs_dropped": judge.dropped_pairs,
            "mean_relevant_per_customer": float(np.mean([len(s) for s in judge.truth])) if judge.truth else None,
        },
        "grid": grid_rows,
        "chosen": chosen,
    }
    if investigate:
        result["investigation"] = investigate_date(t, data=data, items=items, judge=judge, grid_rows=grid_rows,
                                                   lists=lists, chosen_ids=chosen_ids, selection=selection,
                                                   interactions=interactions, seed=seed, popularity=popularity,
                                                   outcome_weight=float(spec.interactions[spec.outcome]))
    return result


def investigate_date(t: datetime, *, data: InteractionMatrix, items: pd.DataFrame, judge: Judge,
                     grid_rows: list[dict[str, Any]], lists: dict[str, np.ndarray], chosen_ids: np.ndarray,
                     selection: Any, interactions: pd.DataFrame, seed: int, popularity: dict[str, Any],
                     outcome_weight: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_label = {r["label"]: r for r in grid_rows}
    base = popularity["recall_at_k"]

    def brief(row: dict[str, Any]) -> dict[str, Any]:
        return {k: row.get(k) for k in ("label", "recall_at_k", "plain_recall_at_k", "precision_at_k", "ndcg_at_k",
                                         "coverage", "recall_vs_popularity", "meets_targets")}

    # ---- the selection rule ----------------------------------------------------------------
    tried = selection.candidates
    best_holdout = max(tried, key=lambda r: (r["recall_at_k"] or -1.0, -tried.index(r)))
    eligible_test = [r for r in grid_rows if r["coverage"] is not None and r["coverage"] >= COVERAGE_TARGET]
    labels = [r["label"] for r in grid_rows if r["label"] in {c["label"] for c in tried}]
    h = pd.Series({c["label"]: c["recall_at_k"] for c in tried})[labels]
    s = pd.Series({r["label"]: r["recall_at_k"] for r in grid_rows})[labels]
    out["rule"] = {
        "product_pick": brief(by_label[selection.label]),
        "holdout_best_recall_no_coverage_floor": {**brief(by_label[best_holdout["label"]]),
                                                  "holdout_coverage": best_holdout["coverage"]},
        "test_best_recall": brief(max(grid_rows, key=lambda r: r["recall_at_k"] or -1.0)),
        "test_best_recall_with_coverage": brief(max(eligible_test, key=lambda r: r["recall_at_k"] or -1.0))
        if eligible_test else None,
        "holdout_vs_test_spearman": float(h.rank().corr(s.rank())),
        "meeting_both_targets_on_test": [r["label"] for r in grid_rows if r["meets_targets"]],
        "max_ratio_on_test": max((r["recall_vs_popularity"] or 0.0) for r in grid_rows),
    }

    # ---- the same selection with the catalogue cut at T --------------------------------------
    # Candidates = items with an event before T (what a warehouse fed day by day would hold, minus
    # stock codes only guests bought): coverage's denominator loses the items no collaborative
    # model can show.
    known = np.asarray(data.matrix.sum(axis=0)).ravel() > 0
    known &= judge.allowed
    spec_args = selection_args(selection)
    cut = select_recommender(interactions, items, as_of=pd.Timestamp(t), candidate_items=data.item_ids[known].tolist(),
                             **spec_args)
    cut_ids = cut.model.recommend(judge.rows, n=EVALUATION_K, exclude=judge.exclude, allowed=known)[0]
    cut_metrics = judge.metrics(cut_ids, set(np.flatnonzero(known).tolist()))
    out["catalogue_cut_at_t"] = {
        "candidate_items": int(known.sum()),
        "pick": cut.label, "reason": cut.reason,
        **{k: cut_metrics[k] for k in ("recall_at_k", "plain_recall_at_k", "precision_at_k", "ndcg_at_k", "coverage")},
        "recall_vs_popularity": (cut_metrics["recall_at_k"] / base) if base else None,
        "holdout": [{k: c.get(k) for k in ("label", "recall_at_k", "coverage", "meets_coverage")} for c in cut.candidates],
    }

    # ---- history length, time decay and weighting --------------------------------------------
    events = interactions[pd.to_datetime(interactions["event_at"]) < pd.Timestamp(t)]
    catalogue = items["item_id"].astype(str).tolist()
    variants: list[dict[str, Any]] = []
    for variant, days, half_life, weighting in MATRIX_VARIANTS:
        subset = events if days is None else events[pd.to_datetime(events["event_at"]) >= pd.Timestamp(t - timedelta(days=days))]
        if days is None and half_life is None:
            matrix = data
        else:
            matrix = build_matrix(subset, reference_at=t, item_ids=catalogue, half_life_days=half_life)
        if weighting is not None:
            values = matrix.matrix.copy()
            # distinct: each (customer, item) counts once, at the purchase weight; log1p: damped counts.
            values.data = (np.full_like(values.data, outcome_weight) if weighting == "distinct"
                           else np.log1p(values.data)).astype(np.float32)
            matrix = dataclasses.replace(matrix, matrix=values)
        # Judge on the same customers and items: rows / columns of this matrix by id.
        sub_judge = _rejudge(judge, matrix)
        for name, params in PROBES:
            model = make_recommender(name, **params).fit(matrix, items, seed=seed)
            ids = _back_to(judge, matrix, sub_judge, model)
            # Customers with no event in the shorter history get popularity's list (a fallback).
            ids[sub_judge < 0] = lists["popularity"][sub_judge < 0]
            m = judge.metrics(ids)
            variants.append({"variant": variant, "label": model.label, "recall_at_k": m["recall_at_k"],
                             "plain_recall_at_k": m["plain_recall_at_k"], "precision_at_k": m["precision_at_k"],
                             "coverage": m["coverage"], "ndcg_at_k": m["ndcg_at_k"],
                             "recall_vs_popularity": (m["recall_at_k"] / base) if base else None,
                             "judged_with_history": int((sub_judge >= 0).sum())})
    out["history"] = variants

    # ---- how strong popularity is here ------------------------------------------------------
    pop7, ids7 = fit_and_judge("popularity", {"window_days": 7}, data, items, judge, seed)
    outcome_before = np.asarray(data.converted.sum(axis=0)).ravel() > 0
    pairs = judge.pairs
    cold = ~outcome_before[pairs["column"].to_numpy()]
    history = data.history_sizes()[judge.rows]
    top10 = set(make_recommender("popularity").fit(data, items, seed=seed).order[:10].tolist())
    top100 = set(make_recommender("popularity").fit(data, items, seed=seed).order[:100].tolist())
    col = pairs["column"].to_numpy()
    out["popularity"] = {
        "popularity_7d": brief({**pop7, "recall_vs_popularity": (pop7["recall_at_k"] / base) if base else None}),
        "relevant_pairs": int(len(pairs)),
        "relevant_never_bought_before_t": float(cold.mean()),
        "relevant_in_popularity_top10": float(np.isin(col, list(top10)).mean()),
        "relevant_in_popularity_top100": float(np.isin(col, list(top100)).mean()),
        "judged_history_items_median": float(np.median(history)),
        "judged_history_items_p25": float(np.percentile(history, 25)),
        "judged_with_fewer_than_5_items": float((history < 5).mean()),
    }

    # ---- non-product stock codes and the catalogue -----------------------------------------
    non_product = set(items.loc[items["category"].eq("non_product"), "item_id"].astype(str))
    np_columns = data.item_columns(sorted(non_product))
    np_columns = np_columns[np_columns >= 0]
    known_columns = set(np.flatnonzero(np.asarray(data.matrix.sum(axis=0)).ravel() > 0).tolist()) & judge.candidate_columns

    def non_product_users(ids: np.ndarray) -> int:
        return int(np.isin(ids, np_columns).any(axis=1).sum())

    # List slots on items nobody bought before T: stock codes first sold later (the backtest's catalogue
    # is not cut at T), codes only guests bought, and lower-case twins of real codes ("15056bl" beside
    # "15056BL", same name): the twins of an item the customer already bought dodge "exclude converted".
    with_history = np.asarray(data.matrix.sum(axis=0)).ravel() > 0
    lower = pd.Series(data.item_ids.astype(str)).str.lower().to_numpy()
    twin = pd.Series(lower).duplicated(keep=False).to_numpy() & ~with_history

    def slot_shares(ids: np.ndarray) -> dict[str, float]:
        valid = ids >= 0
        column = np.maximum(ids, 0)
        slots = max(int(valid.sum()), 1)
        bought_twin = 0
        for r in range(ids.shape[0]):
            bought = set(lower[judge.exclude[r].indices])
            bought_twin += sum(1 for c in ids[r] if c >= 0 and twin[c] and lower[c] in bought)
        return {"no_history": float((valid & ~with_history[column]).sum() / slots),
                "lowercase_twin": float((valid & twin[column]).sum() / slots),
                "twin_of_bought": bought_twin / slots}

    out["slots"] = {"chosen": slot_shares(chosen_ids), **{lbl: slot_shares(ids) for lbl, ids in lists.items()}}

    chosen_label = selection.label
    out["catalogue"] = {
        "non_product_items": len(non_product),
        "relevant_pairs_non_product": int(np.isin(col, np_columns).sum()),
        "users_with_non_product_in_list": {"chosen": non_product_users(chosen_ids),
                                           "popularity": non_product_users(lists["popularity"]),
                                           **{lbl: non_product_users(lists[lbl]) for lbl in lists if lbl != "popularity"}},
        "candidate_items": len(judge.candidate_columns),
        "candidate_items_with_event_before_t": len(known_columns),
        "coverage_over_items_known_before_t": {
            "chosen": judge.metrics(chosen_ids, known_columns)["coverage"],
            **{lbl: judge.metrics(ids, known_columns)["coverage"] for lbl, ids in lists.items()},
        },
        "lowercase_duplicate_codes": int(items["item_id"].astype(str).str.lower().duplicated(keep=False).sum() // 2),
        "chosen_label": chosen_label,
    }
    return out


def selection_args(selection: Any) -> dict[str, Any]:
    """The arguments (besides as_of and candidates) ``run_recommendation`` passed, from the selection's summary."""
    summary = selection.summary
    return {"holdout_days": summary["holdout_days"], "k": summary["k"], "min_coverage": summary["min_coverage"],
            "time_budget_seconds": selection.timings["budget"], "seed": summary["seed"]}


def _rejudge(judge: Judge, matrix: InteractionMatrix) -> np.ndarray:
    """Rows in ``matrix`` of the judged customers (-1: no event in that matrix's history)."""
    return matrix.user_rows(judge.data.user_ids[judge.rows])


def _back_to(judge: Judge, matrix: InteractionMatrix, rows: np.ndarray, model: Any) -> np.ndarray:
    """Top-10 lists of the judged customers from a model fitted on another matrix, as columns of judge.data.

    Customers with no event in that matrix get an empty list (the caller fills it); exclusions are still every
    item they bought before T (not only in the shorter history), as serving would apply them.
    """
    ids = np.full((rows.size, EVALUATION_K), -1, dtype=np.int64)
    present = rows >= 0
    if not present.any():
        return ids
    # The same item universe (catalogue ∪ events): columns may differ only if the history drops items.
    mapping = judge.data.item_columns(matrix.item_ids)
    inverse = matrix.item_columns(judge.data.item_ids)
    exclude = judge.exclude[np.flatnonzero(present)]
    exclude_cols = exclude.tocoo()
    exclude_new = pd.DataFrame({"r": exclude_cols.row, "c": inverse[exclude_cols.col]})
    exclude_new = exclude_new[exclude_new["c"] >= 0]
    ex = sp.csr_matrix((np.ones(len(exclude_new), dtype=np.float32), (exclude_new["r"], exclude_new["c"])),
                       shape=(int(present.sum()), matrix.n_items))
    allowed = np.zeros(matrix.n_items, dtype=bool)
    allowed_cols = inverse[judge.allowed]
    allowed[allowed_cols[allowed_cols >= 0]] = True
    got, _ = model.recommend(rows[present], n=EVALUATION_K, exclude=ex, allowed=allowed)
    ids[present] = np.where(got >= 0, mapping[np.maximum(got, 0)], -1)
    return ids


# ------------------------------------------------------------------------------------------------
# Output


def fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def ratio(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def date_markdown(result: dict[str, Any]) -> str:
    d = result["data"]
    sel = result["selection"]
    lines = [
        f"### T = {result['test_date']} (test [{result['test_date']}, {result['test_end']}))",
        "",
        f"{d['judged_customers']:,} judged customers (history before T and ≥ 1 new item bought in the window; "
        f"{d['test_customers_without_history']:,} more bought but had no history), mean "
        f"{fmt(d['mean_relevant_per_customer'], 1)} relevant items each; {d['customers_before_t']:,} customers and "
        f"{d['events_before_t']:,} purchase lines before T; {d['candidate_items']:,} candidate items. "
        f"Selection (holdout [T − 30 d, T)): **{sel['label']}** — {sel['reason']} "
        f"({result['selection_seconds']:.0f} s).",
        "",
        "| model | precision@10 | recall@10 (norm.) | plain recall@10 | NDCG@10 | coverage | recall ÷ popularity | holdout recall@10 | holdout coverage |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["grid"]:
        h = row.get("holdout") or {}
        mark = " ← chosen" if row["label"] == sel["label"] else ""
        lines.append(
            f"| {row['label']}{mark} | {fmt(row['precision_at_k'])} | {fmt(row['recall_at_k'])} | "
            f"{fmt(row['plain_recall_at_k'])} | {fmt(row['ndcg_at_k'])} | {pct(row['coverage'])} | "
            f"{ratio(row['recall_vs_popularity'])} | {fmt(h.get('recall_at_k'))} | {pct(h.get('coverage'))} |")
    c = result["chosen"]
    lines.append(
        f"| **chosen: {c['label']}** (refitted winner) | **{fmt(c['precision_at_k'])}** | **{fmt(c['recall_at_k'])}** | "
        f"**{fmt(c['plain_recall_at_k'])}** | **{fmt(c['ndcg_at_k'])}** | **{pct(c['coverage'])}** | "
        f"**{ratio(c['recall_vs_popularity'])}** | | |")
    return "\n".join(lines)


def medians_markdown(results: list[dict[str, Any]]) -> str:
    labels = [r["label"] for r in results[0]["grid"]]
    lines = [
        f"### Medians over {len(results)} test dates",
        "",
        "| model | precision@10 | recall@10 (norm.) | plain recall@10 | NDCG@10 | coverage | recall ÷ popularity | chosen at |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]

    def med(values: list[Any]) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    for label in labels:
        rows = [next(r for r in res["grid"] if r["label"] == label) for res in results]
        chosen_at = [res["test_date"] for res in results if res["selection"]["label"] == label]
        lines.append(
            f"| {label} | {fmt(med([r['precision_at_k'] for r in rows]))} | {fmt(med([r['recall_at_k'] for r in rows]))} | "
            f"{fmt(med([r['plain_recall_at_k'] for r in rows]))} | {fmt(med([r['ndcg_at_k'] for r in rows]))} | "
            f"{pct(med([r['coverage'] for r in rows]))} | {ratio(med([r['recall_vs_popularity'] for r in rows]))} | "
            f"{', '.join(chosen_at)} |")
    chosen = [res["chosen"] for res in results]
    lines.append(
        f"| **chosen (whatever the selection picked)** | **{fmt(med([c['precision_at_k'] for c in chosen]))}** | "
        f"**{fmt(med([c['recall_at_k'] for c in chosen]))}** | **{fmt(med([c['plain_recall_at_k'] for c in chosen]))}** | "
        f"**{fmt(med([c['ndcg_at_k'] for c in chosen]))}** | **{pct(med([c['coverage'] for c in chosen]))}** | "
        f"**{ratio(med([c['recall_vs_popularity'] for c in chosen]))}** | |")
    met = sum(1 for c in chosen if c["meets_targets"])
    lines += ["", f"Targets (recall@10 ≥ {RATIO_TARGET:g}× popularity and coverage ≥ {COVERAGE_TARGET:.0%}): the chosen "
              f"model meets both on {met} of {len(results)} test dates."]
    return "\n".join(lines)


def investigation_markdown(results: list[dict[str, Any]]) -> str:
    lines = ["### Investigation", "", "Selection rule (test-window numbers; ratio = recall@10 ÷ popularity's):", "",
             "| T | product pick | best holdout recall, no coverage floor | best on test | best on test with coverage ≥ 25 % | holdout↔test rank corr. | max ratio on test | meets both targets |",
             "|---|---|---|---|---|---:|---:|---|"]

    def cell(row: dict[str, Any] | None) -> str:
        if row is None:
            return "none"
        return f"{row['label']}: {fmt(row['recall_at_k'], 3)}, {ratio(row['recall_vs_popularity'])}, cov {pct(row['coverage'])}"

    for res in results:
        r = res["investigation"]["rule"]
        lines.append(
            f"| {res['test_date']} | {cell(r['product_pick'])} | {cell(r['holdout_best_recall_no_coverage_floor'])} | "
            f"{cell(r['test_best_recall'])} | {cell(r['test_best_recall_with_coverage'])} | "
            f"{fmt(r['holdout_vs_test_spearman'], 2)} | {ratio(r['max_ratio_on_test'])} | "
            f"{', '.join(r['meeting_both_targets_on_test']) or 'none'} |")
    lines += ["", "The product's selection again with the catalogue cut at T (candidates = items with an event before T; "
              "test coverage over those):", "",
              "| T | candidates | pick | recall@10 | ratio to popularity | coverage | holdout: candidates reaching 25 % coverage |",
              "|---|---:|---|---:|---:|---:|---|"]
    for res in results:
        c = res["investigation"]["catalogue_cut_at_t"]
        reach = ", ".join(f"{h['label']} {pct(h['coverage'])}" for h in c["holdout"] if h["meets_coverage"])
        lines.append(f"| {res['test_date']} | {c['candidate_items']:,} | {c['pick']} | {fmt(c['recall_at_k'])} | "
                     f"{ratio(c['recall_vs_popularity'])} | {pct(c['coverage'])} | {reach or 'none'} |")
    shown = ["content", "hybrid(λ=500, content_weight=0.3)", "bpr(iterations=150)", "als(factors=64)"]
    lines += ["", "Share of list slots on items nobody bought before T / on lower-case twin stock codes / on the twin of "
              "an item the customer had already bought:", "",
              "| T | chosen | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    for res in results:
        slots = res["investigation"]["slots"]

        def share(v: dict[str, float]) -> str:
            return f"{pct(v['no_history'])} / {pct(v['lowercase_twin'])} / {pct(v['twin_of_bought'])}"

        lines.append(f"| {res['test_date']} | {res['selection']['label']}: {share(slots['chosen'])} | "
                     + " | ".join(share(slots[label]) for label in shown) + " |")
    lines += ["", f"History length, time decay and weighting of the matrix, medians over the {len(results)} test dates "
              "(fitted on events before T; recall@10 (ratio to popularity, coverage); customers without an event in a "
              "shorter history get popularity's list; every date in the JSON):", ""]
    variants = list(dict.fromkeys(v["variant"] for v in results[0]["investigation"]["history"]))
    probes = list(dict.fromkeys(v["label"] for v in results[0]["investigation"]["history"]))
    lines += ["| matrix | " + " | ".join(probes) + " |", "|---|" + "---|" * len(probes)]
    for variant in variants:
        cells = []
        for probe in probes:
            found = [next(x for x in res["investigation"]["history"] if x["variant"] == variant and x["label"] == probe)
                     for res in results]
            cells.append(f"{fmt(statistics.median(v['recall_at_k'] for v in found), 3)} "
                         f"({ratio(statistics.median(v['recall_vs_popularity'] for v in found))}, "
                         f"{pct(statistics.median(v['coverage'] for v in found))})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    best = max((x for res in results for x in res["investigation"]["history"]), key=lambda x: x["recall_vs_popularity"] or 0)
    lines += ["", f"Highest ratio of any probe on any date: {best['label']} with {best['variant']}: "
              f"{ratio(best['recall_vs_popularity'])} (coverage {pct(best['coverage'])})."]
    lines += ["", "Popularity on this data, and the catalogue:", "",
              "| T | popularity recall@10 (30 d / 7 d window) | relevant items nobody bought before T | relevant in popularity top 10 / top 100 | judged history: median items (< 5 items) | non-product stock codes in lists (chosen / popularity) | chosen coverage over items with an event before T |",
              "|---|---|---:|---|---|---|---:|"]
    for res in results:
        p = res["investigation"]["popularity"]
        c = res["investigation"]["catalogue"]
        base = next(r for r in res["grid"] if r["name"] == "popularity")
        lines.append(
            f"| {res['test_date']} | {fmt(base['recall_at_k'], 3)} / {fmt(p['popularity_7d']['recall_at_k'], 3)} | "
            f"{pct(p['relevant_never_bought_before_t'])} | {pct(p['relevant_in_popularity_top10'])} / "
            f"{pct(p['relevant_in_popularity_top100'])} | {p['judged_history_items_median']:.0f} "
            f"({pct(p['judged_with_fewer_than_5_items'])}) | {c['users_with_non_product_in_list']['chosen']} / "
            f"{c['users_with_non_product_in_list']['popularity']} users | "
            f"{pct(c['coverage_over_items_known_before_t']['chosen'])} of {c['candidate_items_with_event_before_t']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow-eval-recommendations"))
    parser.add_argument("--test-dates", default=DEFAULT_DATES, help="comma-separated midnights (UTC), T + 30 d ≤ 2011-12-09")
    parser.add_argument("--investigate", action="store_true", help="also run the prototypes (see the docstring)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args(argv)

    dates = [datetime.fromisoformat(d.strip()) for d in args.test_dates.split(",") if d.strip()]
    for d in dates:
        if d + timedelta(days=TEST_DAYS) > LAST_DAY:
            raise SystemExit(f"test date {d:%Y-%m-%d}: T + {TEST_DAYS} d is after the data's last day {LAST_DAY:%Y-%m-%d}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    raw = raw_warehouse(args.workdir, args.data)
    oracle_dir = args.workdir / "oracle"
    shutil.rmtree(oracle_dir, ignore_errors=True)
    build(raw, oracle_dir / "cohortflow.duckdb", oracle_dir / "dbt", ORACLE_AS_OF)
    oracle_con = duckdb.connect(str(oracle_dir / "cohortflow.duckdb"), read_only=True)
    results = []
    try:
        for t in dates:
            print(f"T = {t:%Y-%m-%d} ...", flush=True)
            results.append(evaluate_date(t, raw=raw, workdir=args.workdir, oracle_con=oracle_con,
                                         investigate=args.investigate))
            res = results[-1]
            c = res["chosen"]
            print(f"  chosen {c['label']}: recall@10 {fmt(c['recall_at_k'])} = {ratio(c['recall_vs_popularity'])} "
                  f"popularity, coverage {pct(c['coverage'])}; {res['data']['judged_customers']:,} judged "
                  f"(selection {res['selection_seconds']:.0f} s)", flush=True)
    finally:
        oracle_con.close()
    print()
    for res in results:
        print(date_markdown(res))
        print()
    print(medians_markdown(results))
    if args.investigate:
        print()
        print(investigation_markdown(results))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"test_dates": [d.strftime("%Y-%m-%d") for d in dates], "results": results},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
