"""Quality of the 7-day purchase prediction on the real UCI Online Retail data, beside two baselines.

Protocol, for each test cutoff T (midnight UTC, with T + 7 days before the data's last event):

1. **Features as of T.** A fresh copy of the ingested raw warehouse, then ``dbt build --select
   +prediction_features +prediction_outcomes`` with as_of = T and the project's defaults (20 weekly
   training cutoffs). ``marts.prediction_features`` uses nothing at or after a cutoff, and
   ``marts.prediction_outcomes`` is cut at T, so no label of the training examples reaches T.
2. **Train as the product does** (``ml/predictions.py`` ``run_prediction``): the ``purchase_7d``
   declaration read from the manifest of that build; ``load_examples(con, declaration, T)`` (the latest
   8 weekly cutoffs whose 7-day horizon ended by T, starting cohort "active in the 90 days before the
   cutoff"); ``time_split_sizes``; ``train_prediction`` with the declaration's seed (fit on the oldest
   cutoffs, calibrate on the next, validate and pick the winner on the latest). One deviation, forced:
   as shipped, training fails on this data (feature columns with no value at all crash the gradient
   boosting, see ``ALL_MISSING_NOTE``); the script records that error, then excludes those columns through the
   declaration's own ``features.exclude``, which is what a user would have to write.
3. **Score** the scoring rows at T: the starting cohort at T (an event in the 90 days before T), i.e.
   the users the product would score that night.
4. **Realised outcome.** Label 1 when the user has a ``purchase`` event in [T, T + 7 days). Read from
   ``marts.prediction_outcomes`` of an "oracle" build as of the midnight after the data's last event
   (every event visible). Outcome rows are UTC days and T is midnight, so "outcome day in
   [day(T), day(T) + 7)" is exactly [T, T + 7 days). Cross-checked against ``raw.events`` (the count
   of disagreements is printed; expected 0).
5. **Metrics** (``ml.metrics.classification_metrics``) on the scored users: AUC, log loss, expected
   calibration error (10 equal-frequency bins) and Brier score, for

   (a) the product's model (the calibrated winner of ``train_prediction``);
   (b) an RFM logistic regression: recency (days since the last purchase), frequency (orders in
       90 days and ever), monetary (net revenue in 90 days and ever), from the same feature rows;
       ``clip at 0 → log1p → median imputation with a missing indicator → standard scaling →
       LogisticRegression(C=1)``; fitted on the product's fit cutoffs and calibrated exactly as the
       product calibrates (same calibration cutoffs, same sigmoid/isotonic rule), seeded;
   (c) the base rate: everyone gets the conversion rate of the latest labelled week (the training
       cutoff T − 7 days), the freshest rate known at T.

   Beside them: "ECE floor", the median ECE that labels drawn from the product's own probabilities
   would give on this many users (200 seeded draws): below it, ECE is noise.

Default test cutoffs: the 1st and 15th of each month from 2011-09-01 to 2011-12-01 (7 cutoffs). Each
has 20 weeks of labelled history before it inside the data (which starts 2010-12-01), the 7-day
horizons do not overlap, they cover the quiet late summer and the Q4 wholesale ramp-up (the test of
calibration under a moving purchase rate), they fall on different weekdays, and the last horizon ends
2011-12-08, before the last event (2011-12-09 12:50).

``--investigate`` adds prototypes (in this script only; ``ml/`` and the dbt models are unchanged),
each measured on the same test users unless said: scoring rows built like training rows (the skew of
a midnight scoring cutoff, whose 7/30/90-day windows hold 6/29/89 days of data); recalibration of the
winner on the freshest labelled cutoffs (calibration + validation, or the latest only); 20 training
cutoffs instead of 8; each candidate alone; periodicity features computed from the raw purchase
days; a larger starting cohort (everyone with a past event: its own, larger test set); the product's
probabilities shifted to the realised rate (an oracle, not deployable: what is left of the ECE once
the week's level is known); the spread of the weekly conversion rate; single-feature AUCs (a missing
value counted as the extreme). Those rows compare many variants on the same test cutoffs: read small
differences as noise (one cutoff's AUC has a standard error of about 0.02).

Usage::

    .venv/bin/python bench/eval_predictions_online_retail.py [--data ../shared/data/online_retail/online_retail.csv.gz]
        [--workdir /tmp/cohortflow-eval-online-retail] [--test-cutoffs 2011-09-01,2011-09-15,...]
        [--seed 0] [--investigate] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from cohortflow.declarations import PredictionDeclaration, load_project_predictions  # noqa: E402
from cohortflow.ingest import ingest_files  # noqa: E402
from cohortflow.warehouse import connect  # noqa: E402

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DBT = Path(sys.executable).parent / "dbt"
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"
DEFAULT_CUTOFFS = "2011-09-01,2011-09-15,2011-10-01,2011-10-15,2011-11-01,2011-11-15,2011-12-01"
PREDICTION = "purchase_7d"
RFM_COLUMNS = ["days_since_last_purchase", "orders_90d", "orders_all_time", "revenue_90d", "revenue_all_time"]
ECE_FLOOR_DRAWS = 200
ALL_MISSING_NOTE = (
    "HistGradientBoostingClassifier (scikit-learn 1.9.1) raises 'window shape cannot be larger than "
    "input array shape' when a feature column has no value at all"
)


# ------------------------------------------------------------------------------------------------
# Warehouse and dbt


def raw_warehouse(workdir: Path, data: Path) -> Path:
    """The Online Retail file ingested once into ``workdir/raw_events.duckdb`` (reused when complete)."""
    path = workdir / "raw_events.duckdb"  # not raw.duckdb: its catalog name would clash with the schema raw
    marker = workdir / "raw_events.complete"
    if marker.exists() and marker.read_text().strip() == str(data.resolve()):
        return path
    path.unlink(missing_ok=True)
    con = connect(path)
    try:
        summary = ingest_files(con, [data], "online-retail", now=datetime(2026, 12, 5))
        con.execute("checkpoint")
    finally:
        con.close()
    loaded = sum(f.rows_loaded for f in summary.files)
    print(f"ingested {data.name}: {loaded:,} events", flush=True)
    marker.write_text(str(data.resolve()))
    return path


def build(raw: Path, warehouse: Path, scratch: Path, as_of: datetime, variables: dict[str, Any] | None = None) -> float:
    """Copy the raw warehouse to ``warehouse`` and build the prediction inputs as of ``as_of``; wall seconds."""
    shutil.copyfile(raw, warehouse)
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "COHORTFLOW_WAREHOUSE": str(warehouse),
           "COHORTFLOW_AS_OF": as_of.strftime("%Y-%m-%dT%H:%M:%SZ")}
    args = [str(DBT), "build", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
            "--select", "+prediction_features", "+prediction_outcomes",
            "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs")]
    if variables:
        args += ["--vars", json.dumps(variables)]
    started = time.perf_counter()
    result = subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"dbt build as of {as_of} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def declaration_from(scratch: Path) -> PredictionDeclaration:
    manifest = json.loads((scratch / "target" / "manifest.json").read_text())
    by_name = {d.name: d for d in load_project_predictions(manifest)}
    if PREDICTION not in by_name:
        raise SystemExit(f"prediction {PREDICTION!r} is not declared (have {sorted(by_name)})")
    return by_name[PREDICTION]


# ------------------------------------------------------------------------------------------------
# Models


@dataclass
class Fitted:
    """A model's probabilities on the test users, plus what to say about its training."""

    name: str
    probability: np.ndarray
    notes: dict[str, Any]


def train_product(examples: Any, declaration: PredictionDeclaration, *, n_threads: int = 1) -> tuple[Any, list[str], str | None]:
    """``train_prediction`` exactly as ``run_prediction`` calls it; on the all-missing-column crash,
    again with those columns excluded. Returns (trained, excluded columns, first error or None)."""
    from ml.training import time_split_sizes, train_prediction

    spec = declaration.spec
    validation, calibration = time_split_sizes(
        examples.training["cutoff_at"], examples.training["label"], min_class_examples=spec.min_class_examples)

    def fit(columns: list[str]) -> Any:
        return train_prediction(
            examples.training, columns, descriptions=declaration.feature_descriptions, seed=spec.seed,
            name=declaration.name, min_class_examples=spec.min_class_examples, validation_cutoffs=validation,
            calibration_cutoffs=calibration, n_threads=n_threads)

    try:
        with warnings.catch_warnings():
            # The logistic candidate is fitted first and only warns about the all-missing columns.
            warnings.simplefilter("ignore", UserWarning)
            return fit(examples.feature_columns), [], None
    except ValueError as exc:
        error = f"{type(exc).__name__}: {exc}"
    empty = [c for c in examples.feature_columns if examples.training[c].isna().all()]
    if not empty:
        raise RuntimeError(f"train_prediction failed and no column is all-missing: {error}")
    kept = [c for c in examples.feature_columns if c not in empty]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fit(kept), empty, error


def without_columns(declaration: PredictionDeclaration, columns: list[str], **spec_changes: Any) -> PredictionDeclaration:
    """The declaration with ``columns`` added to ``features.exclude`` (what a user would write)."""
    features = declaration.spec.features.model_copy(update={"exclude": [*declaration.spec.features.exclude, *columns]})
    spec = declaration.spec.model_copy(update={"features": features, **spec_changes})
    return declaration.model_copy(update={"spec": spec})


def _clip_log1p(values: np.ndarray) -> np.ndarray:
    # Net revenue can be negative (cancellations); RFM reads "how much", so below 0 counts as 0.
    return np.log1p(np.clip(values, 0.0, None))


def calibrate_like_product(model: Any, X: pd.DataFrame, y: np.ndarray, method: str) -> Any:
    """Calibrate a fitted model on (X, y) as ``train_prediction`` does (frozen model, same method, same bound)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    from ml.training import _bound_isotonic  # the product's own helper: identical isotonic bound

    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method).fit(X, y)
    if method == "isotonic":
        _bound_isotonic(calibrated, model, X, y)
    return calibrated


def train_alone(training: pd.DataFrame, columns: list[str], declaration: PredictionDeclaration,
                candidate: str | None, validation: int, calibration: int) -> Any:
    """``train_prediction`` with the product's settings and split sizes; one candidate, or both (None)."""
    from ml.training import CANDIDATES, train_prediction

    spec = declaration.spec
    return train_prediction(training, columns, seed=spec.seed, name=declaration.name,
                            min_class_examples=spec.min_class_examples, validation_cutoffs=validation,
                            calibration_cutoffs=calibration, candidates=[candidate] if candidate else CANDIDATES,
                            n_threads=1)


def level_to(p: np.ndarray, rate: float) -> np.ndarray:
    """``p`` shifted by one constant in log-odds so that its mean is ``rate``."""
    from scipy.optimize import brentq
    from scipy.special import expit, logit

    z = logit(np.clip(p, 1e-9, 1 - 1e-9))
    shift = brentq(lambda b: float(expit(z + b).mean()) - rate, -20, 20)
    return expit(z + shift)


PERIODICITY_COLUMNS = ["order_days_14d", "order_days_180d", "median_days_between_order_days", "recency_over_median_gap",
                       "repeat_hazard_7d", "days_since_second_last_order_day"]


def periodicity_features(raw_con: Any, keys: pd.DataFrame) -> pd.DataFrame:
    """Per (user_id, cutoff_at) row of ``keys`` (midnight cutoffs), from the purchase days strictly before it.

    ``repeat_hazard_7d``: among the user's past gaps between purchase days, the share of those at least
    as long as the current gap d (days since the last purchase day) that ended within 7 more days
    (a gap in [d, d + 6]); smoothed towards 0.1 with one pseudo-gap. Empty when fewer than 2 purchase days.
    """
    days = raw_con.execute(
        "select cast(user_id as varchar) as user_id, list(distinct cast(event_time as date) order by "
        "cast(event_time as date)) as days from raw.events where event_type = 'purchase' group by 1").df()
    by_user = {u: np.array([np.datetime64(d, "D").astype(np.int64) for d in ds]) for u, ds in zip(days["user_id"], days["days"])}
    rows = []
    cutoff_days = pd.to_datetime(keys["cutoff_at"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    for user, cutoff_day in zip(keys["user_id"].astype(str), cutoff_days):
        history = by_user.get(user, np.zeros(0, dtype=np.int64))
        history = history[: np.searchsorted(history, cutoff_day, side="left")]
        row = dict.fromkeys(PERIODICITY_COLUMNS, np.nan)
        row["order_days_14d"] = float((history >= cutoff_day - 14).sum())
        row["order_days_180d"] = float((history >= cutoff_day - 180).sum())
        if history.size >= 2:
            gaps = np.diff(history)
            d = cutoff_day - history[-1]
            median_gap = float(np.median(gaps))
            row["median_days_between_order_days"] = median_gap
            row["recency_over_median_gap"] = d / median_gap
            row["repeat_hazard_7d"] = (float(((gaps >= d) & (gaps <= d + 6)).sum()) + 0.1) / (float((gaps >= d).sum()) + 1.0)
            row["days_since_second_last_order_day"] = float(cutoff_day - history[-2])
        rows.append(row)
    return pd.DataFrame(rows, columns=PERIODICITY_COLUMNS)


def rfm_logistic(training: pd.DataFrame, summary: dict[str, Any], test: pd.DataFrame, seed: int,
                 columns: list[str] | None = None) -> Fitted:
    """RFM logistic regression on the product's fit cutoffs, calibrated on its calibration cutoffs."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from threadpoolctl import threadpool_limits

    columns = list(columns or RFM_COLUMNS)
    cutoffs = pd.to_datetime(training["cutoff_at"])
    fit = training[cutoffs.isin(pd.to_datetime(summary["fit_cutoffs"]))]
    cal = training[cutoffs.isin(pd.to_datetime(summary["calibration_cutoffs"]))]
    pipeline = Pipeline([
        ("log", FunctionTransformer(_clip_log1p, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="median", add_indicator=True)),
        ("scale", StandardScaler()),
        ("classifier", LogisticRegression(C=1.0, max_iter=2000, random_state=seed)),
    ])
    with threadpool_limits(limits=1):
        pipeline.fit(fit[columns].astype(float), fit["label"].to_numpy())
        calibrated = calibrate_like_product(pipeline, cal[columns].astype(float), cal["label"].to_numpy(),
                                            summary["calibration_method"])
        probability = calibrated.predict_proba(test[columns].astype(float))[:, 1]
        raw = pipeline.predict_proba(test[columns].astype(float))[:, 1]
    coefficients = dict(zip(pipeline[:-1].get_feature_names_out(), np.round(pipeline[-1].coef_[0], 3).tolist()))
    return Fitted("RFM logistic", probability, {"uncalibrated_probability": raw, "coefficients": coefficients})


# ------------------------------------------------------------------------------------------------
# Labels and metrics


def realised(outcomes: pd.DataFrame, users: pd.Series, start: datetime, days: int) -> np.ndarray:
    """1 when the user has an outcome day in [start, start + days) (start is a UTC midnight)."""
    first, end = pd.Timestamp(start), pd.Timestamp(start + timedelta(days=days))
    window = outcomes[(outcomes["outcome_date"] >= first) & (outcomes["outcome_date"] < end)]
    return users.astype(str).isin(set(window["user_id"].astype(str))).astype(int).to_numpy()


def raw_purchasers(raw_con: Any, start: datetime, days: int) -> set[str]:
    rows = raw_con.execute(
        "select distinct cast(user_id as varchar) from raw.events where event_type = 'purchase' "
        "and event_time >= ? and event_time < ?", [start, start + timedelta(days=days)]).fetchall()
    return {r[0] for r in rows}


def metrics_row(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    from ml.metrics import classification_metrics

    m = classification_metrics(y, p)
    return {k: m[k] for k in ("auc", "log_loss", "calibration_error", "brier", "mean_probability", "base_rate",
                              "top_decile_lift")}


def ece_floor(p: np.ndarray, seed: int, draws: int = ECE_FLOOR_DRAWS) -> float:
    """Median ECE of labels drawn from ``p`` itself: what a perfectly calibrated model shows here."""
    from ml.metrics import expected_calibration_error

    rng = np.random.default_rng(seed)
    return float(np.median([expected_calibration_error(rng.random(p.size) < p, p) for _ in range(draws)]))


# ------------------------------------------------------------------------------------------------
# One test cutoff


def evaluate_cutoff(cutoff: datetime, *, raw: Path, workdir: Path, outcomes: pd.DataFrame, oracle: Path,
                    raw_con: Any, seed: int, investigate: bool) -> dict[str, Any]:
    from ml import examples as examples_module
    from ml.examples import load_examples
    from ml.training import score

    scratch = workdir / "as_of"
    warehouse = workdir / "as_of.duckdb"
    build_s = build(raw, warehouse, scratch, cutoff)
    declaration = declaration_from(scratch)
    horizon = declaration.spec.within_days
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        started = time.perf_counter()
        examples = load_examples(con, declaration, cutoff)
        trained, excluded, error = train_product(examples, declaration)
        train_s = time.perf_counter() - started
        columns = trained.feature_columns
        test = examples.scoring.reset_index(drop=True)
        y = realised(outcomes, test["user_id"], cutoff, horizon)
        raw_y = test["user_id"].astype(str).isin(raw_purchasers(raw_con, cutoff, horizon)).astype(int).to_numpy()
        product_p = score(trained, test, columns)["probability"].to_numpy()
        rfm = rfm_logistic(examples.training, trained.summary, test, seed)
        latest = examples.training[examples.training["cutoff_at"] == examples.training["cutoff_at"].max()]
        base_rate = float(latest["label"].mean())
        models = {
            "model": product_p,
            "RFM logistic": rfm.probability,
            "base rate": np.full(len(test), base_rate),
        }
        summary = trained.summary
        result: dict[str, Any] = {
            "test_cutoff": cutoff.strftime("%Y-%m-%d"),
            "weekday": cutoff.strftime("%a"),
            "users": int(len(test)),
            "positives": int(y.sum()),
            "realised_rate": float(y.mean()),
            "label_disagreements_with_raw_events": int((y != raw_y).sum()),
            "metrics": {name: metrics_row(y, p) for name, p in models.items()},
            "rfm_uncalibrated": metrics_row(y, rfm.notes["uncalibrated_probability"]),
            "rfm_coefficients": rfm.notes["coefficients"],
            "base_rate_used": base_rate,
            "ece_floor": ece_floor(product_p, seed),
            "product": {
                "error_as_shipped": error,
                "excluded_all_missing_columns": excluded,
                "winner": trained.model_name,
                "calibration_method": summary["calibration_method"],
                "training_cutoffs": [pd.Timestamp(c).strftime("%Y-%m-%d") for c in examples.cutoffs],
                "examples": summary["examples"],
                "positives": summary["positives"],
                "validation": {name: {k: c[k] for k in ("auc", "log_loss", "calibration_error")}
                               for name, c in trained.candidates.items()},
                "importance": [(i["feature"], round(i["importance"], 4), i["direction"]) for i in trained.importance[:6]],
            },
            "seconds": {"dbt_build": round(build_s, 1), "load_and_train": round(train_s, 1)},
        }
        if investigate:
            result["investigation"] = investigate_cutoff(
                cutoff, con=con, oracle=oracle, raw_con=raw_con, declaration=without_columns(declaration, excluded), trained=trained,
                examples=examples, test=test, y=y, outcomes=outcomes, seed=seed, examples_module=examples_module)
        return result
    finally:
        con.close()


def investigate_cutoff(cutoff: datetime, *, con: Any, oracle: Path, raw_con: Any, declaration: PredictionDeclaration, trained: Any,
                       examples: Any, test: pd.DataFrame, y: np.ndarray, outcomes: pd.DataFrame, seed: int,
                       examples_module: Any) -> dict[str, Any]:
    """Prototypes measured on the same test users (nothing here changes ml/ or the dbt models)."""
    from ml.examples import load_examples
    from ml.training import score

    out: dict[str, Any] = {}
    columns = trained.feature_columns
    training = examples.training
    cutoffs = pd.to_datetime(training["cutoff_at"])
    method = trained.summary["calibration_method"]
    base_model = trained.model.estimator.estimator  # CalibratedClassifierCV(FrozenEstimator(model))

    # 1. Skew: score rows built like training rows (a training cutoff at T of the oracle build, which
    #    reads the 7 / 30 / 90 whole days before T) instead of the scoring rows at T (as_of's own day,
    #    empty at midnight, plus the 6 / 29 / 89 days before it).
    ocon = duckdb.connect(str(oracle), read_only=True)
    try:
        like_training = ocon.execute(
            "select * from marts.prediction_features where not is_scoring_cutoff and cutoff_at = ?", [cutoff]).df()
    finally:
        ocon.close()
    aligned = test[["user_id"]].merge(like_training, on="user_id", how="left", validate="one_to_one")
    if aligned[columns].isna().all(axis=1).any():
        raise RuntimeError(f"users scored at {cutoff} without a training-style row in the oracle build")
    differs = {c: int((~np.isclose(test[c].astype(float), aligned[c].astype(float), equal_nan=True)).sum())
               for c in columns}
    out["rows_that_differ_scoring_vs_training_style"] = {c: n for c, n in differs.items() if n}
    out["model, training-style scoring rows"] = metrics_row(y, score(trained, aligned, columns)["probability"].to_numpy())

    # 2. Recalibrate the winner on the freshest labelled cutoffs (calibration + validation).
    fresh = cutoffs.isin(pd.to_datetime(trained.summary["calibration_cutoffs"] + trained.summary["validation_cutoffs"]))
    recalibrated = calibrate_like_product(base_model, training.loc[fresh, columns].astype(float),
                                          training.loc[fresh, "label"].to_numpy(), method)
    out["model, recalibrated on cal+val cutoffs"] = metrics_row(
        y, recalibrated.predict_proba(test[columns].astype(float))[:, 1])
    out["model, recalibrated, training-style rows"] = metrics_row(
        y, recalibrated.predict_proba(aligned[columns].astype(float))[:, 1])

    # 3. 20 training cutoffs instead of 8 (a declaration change: training_cutoffs: 20).
    wider = without_columns(declaration, [], training_cutoffs=20)
    examples20 = load_examples(con, wider, cutoff)
    trained20, _, _ = train_product(examples20, wider)
    out["model, 20 training cutoffs"] = metrics_row(y, score(trained20, test, columns)["probability"].to_numpy())
    out["model, 20 training cutoffs, training-style rows"] = metrics_row(
        y, score(trained20, aligned, columns)["probability"].to_numpy())
    fresh20 = pd.to_datetime(examples20.training["cutoff_at"]).isin(
        pd.to_datetime(trained20.summary["calibration_cutoffs"] + trained20.summary["validation_cutoffs"]))
    recalibrated20 = calibrate_like_product(
        trained20.model.estimator.estimator, examples20.training.loc[fresh20, columns].astype(float),
        examples20.training.loc[fresh20, "label"].to_numpy(), trained20.summary["calibration_method"])
    out["model, 20 training cutoffs, recalibrated on cal+val cutoffs"] = metrics_row(
        y, recalibrated20.predict_proba(test[columns].astype(float))[:, 1])
    out["model, 20 cutoffs: winner / calibration / examples"] = [
        trained20.model_name, trained20.summary["calibration_method"], trained20.summary["examples"]]
    rfm20 = rfm_logistic(examples20.training, trained20.summary, test, seed)
    out["RFM logistic, 20 training cutoffs"] = metrics_row(y, rfm20.probability)

    # 4. The starting cohort: everyone with a past event instead of "active in the last 90 days".
    saved = examples_module.ACTIVE_DAYS
    examples_module.ACTIVE_DAYS = 10_000
    try:
        everyone = load_examples(con, declaration, cutoff)
    finally:
        examples_module.ACTIVE_DAYS = saved
    trained_all, _, _ = train_product(everyone, declaration)
    test_all = everyone.scoring.reset_index(drop=True)
    y_all = realised(outcomes, test_all["user_id"], cutoff, declaration.spec.within_days)
    out["cohort everyone: users / positives"] = [int(len(test_all)), int(y_all.sum())]
    out["cohort everyone: model"] = metrics_row(y_all, score(trained_all, test_all, columns)["probability"].to_numpy())
    out["cohort everyone: RFM logistic"] = metrics_row(
        y_all, rfm_logistic(everyone.training, trained_all.summary, test_all, seed).probability)

    # 5. Each candidate alone (the winner rule picks on one validation week).
    validation, calibration = (len(trained.summary["validation_cutoffs"]), len(trained.summary["calibration_cutoffs"]))
    for candidate in ("logistic", "gradient_boosting"):
        alone = train_alone(examples.training, columns, declaration, candidate, validation, calibration)
        out[f"{candidate} candidate only"] = metrics_row(y, score(alone, test, columns)["probability"].to_numpy())

    # 6. Recalibrate on the latest labelled cutoff only (T - 7 days: the freshest week).
    latest = cutoffs == cutoffs.max()
    newest = calibrate_like_product(base_model, training.loc[latest, columns].astype(float),
                                    training.loc[latest, "label"].to_numpy(), method)
    out["model, recalibrated on the latest cutoff only"] = metrics_row(
        y, newest.predict_proba(test[columns].astype(float))[:, 1])

    # 7. Not deployable, a decomposition: the product's probabilities shifted in log-odds so that their mean is
    #    the realised rate. What is left of the ECE is the shape; the rest was the week's level.
    product_p = score(trained, test, columns)["probability"].to_numpy()
    out["model, level set to the realised rate (oracle)"] = metrics_row(y, level_to(product_p, float(y.mean())))

    # 8. Periodicity features (computed here from raw purchase days, strictly before each cutoff).
    extra_train = periodicity_features(raw_con, training[["user_id", "cutoff_at"]])
    extra_test = periodicity_features(raw_con, test[["user_id"]].assign(cutoff_at=pd.Timestamp(cutoff)))
    training_x = pd.concat([training.reset_index(drop=True), extra_train.reset_index(drop=True)], axis=1)
    test_x = pd.concat([test.reset_index(drop=True), extra_test.reset_index(drop=True)], axis=1)
    trained_x = train_alone(training_x, [*columns, *PERIODICITY_COLUMNS], declaration, None, validation, calibration)
    out["model + periodicity features"] = metrics_row(
        y, score(trained_x, test_x, [*columns, *PERIODICITY_COLUMNS])["probability"].to_numpy())
    out["model + periodicity features: winner"] = trained_x.model_name
    rfm_x = rfm_logistic(training_x, trained_x.summary, test_x, seed, [*RFM_COLUMNS, *PERIODICITY_COLUMNS])
    out["RFM logistic + periodicity features"] = metrics_row(y, rfm_x.probability)
    for column in PERIODICITY_COLUMNS:
        test[column] = test_x[column].to_numpy()
        training[column] = training_x[column].to_numpy()

    # Weekly conversion rate of the starting cohort over the 20 training cutoffs: how much it moves.
    weekly = examples20.training.groupby("cutoff_at")["label"].agg(["count", "sum", "mean"]).sort_index()
    binomial_se = float(np.sqrt((weekly["mean"] * (1 - weekly["mean"]) / weekly["count"]).mean()))
    out["weekly rate over 20 cutoffs"] = {
        "rates": [round(float(v), 4) for v in weekly["mean"]],
        "std": round(float(weekly["mean"].std(ddof=1)), 4),
        "binomial_se": round(binomial_se, 4),
        "median_abs_change_week_to_week": round(float(weekly["mean"].diff().abs().median()), 4),
        "median_abs_change_two_weeks": round(float(weekly["mean"].diff(2).abs().median()), 4),
    }

    # 9. Single features on the test users (AUC of the feature alone, sign chosen to be > 0.5 on *training*).
    from sklearn.metrics import roc_auc_score

    single = {}
    for column in ["days_since_last_purchase", "mean_days_between_orders", "orders_30d", "orders_90d", "orders_all_time",
                   "revenue_90d", "revenue_all_time", "active_days_90d", "tenure_days", "purchases_7d",
                   *PERIODICITY_COLUMNS]:
        train_values = training[column].astype(float).fillna(training[column].astype(float).max() * 2 + 1)
        sign = 1.0 if roc_auc_score(training["label"], train_values) >= 0.5 else -1.0
        values = test[column].astype(float).fillna(training[column].astype(float).max() * 2 + 1)
        single[column] = round(float(roc_auc_score(y, sign * values)), 4) if 0 < y.sum() < y.size else None
    out["single-feature test AUC"] = single
    return out


# ------------------------------------------------------------------------------------------------
# Report


def fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| test cutoff | users | positives (rate) | model | AUC | log loss | ECE | Brier | mean p |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for name, m in r["metrics"].items():
            auc = m["auc"] if name != "base rate" else 0.5
            lines.append(
                f"| {r['test_cutoff']} ({r['weekday']}) | {r['users']:,} | {r['positives']} ({r['realised_rate']:.3f}) | "
                f"{name} | {fmt(auc, 3)} | {fmt(m['log_loss'])} | {fmt(m['calibration_error'])} | {fmt(m['brier'])} | "
                f"{fmt(m['mean_probability'], 3)} |")
    lines.append("")
    lines.append("| median over test cutoffs | AUC | log loss | ECE | Brier |")
    lines.append("|---|---:|---:|---:|---:|")
    for name in results[0]["metrics"]:
        def med(key: str) -> float:
            return statistics.median(0.5 if (name == "base rate" and key == "auc") else r["metrics"][name][key]
                                     for r in results)
        lines.append(f"| {name} | {med('auc'):.3f} | {med('log_loss'):.4f} | {med('calibration_error'):.4f} | "
                     f"{med('brier'):.4f} |")
    lines.append(f"| (ECE floor: labels drawn from the model's own p) | | | "
                 f"{statistics.median(r['ece_floor'] for r in results):.4f} | |")
    return "\n".join(lines)


def diagnostics_markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| test cutoff | realised rate | model mean p | level error | base rate used | ECE floor | winner (calibration) "
             "| validation AUC promised | examples fit / cal / val (positives) |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in results:
        m, prod = r["metrics"]["model"], r["product"]
        ex, pos = prod["examples"], prod["positives"]
        lines.append(
            f"| {r['test_cutoff']} | {r['realised_rate']:.3f} | {m['mean_probability']:.3f} | "
            f"{m['mean_probability'] - r['realised_rate']:+.3f} | {r['base_rate_used']:.3f} | {r['ece_floor']:.4f} | "
            f"{prod['winner']} ({prod['calibration_method']}) | {prod['validation'][prod['winner']]['auc']:.3f} | "
            f"{ex['fit']:,} / {ex['calibration']:,} / {ex['validation']:,} ({pos['fit']} / {pos['calibration']} / "
            f"{pos['validation']}) |")
    return "\n".join(lines)


def investigation_markdown(results: list[dict[str, Any]]) -> str:
    keys = [k for k, v in results[0]["investigation"].items() if isinstance(v, dict) and "auc" in v]
    lines = ["| variant | " + " | ".join(r["test_cutoff"] for r in results) + " | median AUC | median ECE | median log loss |",
             "|---|" + "---:|" * (len(results) + 3)]
    rows = [("model (as run above)", [r["metrics"]["model"] for r in results])]
    rows += [("RFM logistic (as above)", [r["metrics"]["RFM logistic"] for r in results])]
    rows += [(k, [r["investigation"][k] for r in results]) for k in keys]
    for name, ms in rows:
        cells = " | ".join(f"{fmt(m['auc'], 3)} / {fmt(m['calibration_error'], 3)}" for m in ms)
        lines.append(f"| {name} | {cells} | {statistics.median(m['auc'] for m in ms):.3f} | "
                     f"{statistics.median(m['calibration_error'] for m in ms):.4f} | "
                     f"{statistics.median(m['log_loss'] for m in ms):.4f} |")
    lines.append("")
    lines.append("(cells: AUC / ECE on the test users of that cutoff; 'cohort everyone' rows are on their own, larger test set)")
    lines.append("")
    lines.append("Weekly conversion rate of the starting cohort over the 20 weekly cutoffs before each test cutoff:")
    lines.append("")
    lines.append("| test cutoff | std of the weekly rate | binomial s.e. of one week | median change week to week |")
    lines.append("|---|---:|---:|---:|")
    for r in results:
        w = r["investigation"]["weekly rate over 20 cutoffs"]
        lines.append(f"| {r['test_cutoff']} | {w['std']:.4f} | {w['binomial_se']:.4f} | {w['median_abs_change_week_to_week']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow-eval-online-retail"))
    parser.add_argument("--test-cutoffs", default=DEFAULT_CUTOFFS,
                        help="comma-separated UTC days (each evaluated at its midnight)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the baselines and the ECE floor "
                        "(the product's model uses its declaration's seed, 0)")
    parser.add_argument("--investigate", action="store_true", help="also run the prototypes (see the docstring)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    cutoffs = [datetime.strptime(d.strip(), "%Y-%m-%d") for d in args.test_cutoffs.split(",") if d.strip()]
    raw = raw_warehouse(args.workdir, args.data)
    raw_con = duckdb.connect(str(raw), read_only=True)
    first_event, last_event = raw_con.execute("select min(event_time), max(event_time) from raw.events").fetchone()
    horizon_days = 7
    for cutoff in cutoffs:
        if cutoff + timedelta(days=horizon_days) > last_event:
            raise SystemExit(f"test cutoff {cutoff:%Y-%m-%d}: its horizon ends after the last event ({last_event})")

    # The oracle: every event visible (as of the midnight after the last one), with a training-style
    # row at every midnight since the first test cutoff (daily cutoffs) for the skew prototype.
    oracle_as_of = datetime.combine(last_event.date() + timedelta(days=1), datetime.min.time())
    oracle = args.workdir / "oracle.duckdb"
    daily = (oracle_as_of - min(cutoffs)).days
    started = time.perf_counter()
    build(raw, oracle, args.workdir / "oracle", oracle_as_of,
          {"prediction_cutoffs": daily, "prediction_cutoff_step_days": 1})
    ocon = duckdb.connect(str(oracle), read_only=True)
    outcomes = ocon.execute(
        "select user_id, cast(outcome_date as timestamp) as outcome_date from marts.prediction_outcomes "
        "where prediction_id = ?", [PREDICTION]).df()
    ocon.close()
    print(f"data {first_event} .. {last_event}; oracle build as of {oracle_as_of} in "
          f"{time.perf_counter() - started:.1f} s; {len(outcomes):,} purchase days", flush=True)

    results = []
    for cutoff in cutoffs:
        started = time.perf_counter()
        r = evaluate_cutoff(cutoff, raw=raw, workdir=args.workdir, outcomes=outcomes, oracle=oracle, raw_con=raw_con,
                            seed=args.seed, investigate=args.investigate)
        m = r["metrics"]["model"]
        print(f"{r['test_cutoff']}: {r['users']:,} users, {r['positives']} positives; model AUC {m['auc']:.3f} "
              f"ECE {m['calibration_error']:.4f} (floor {r['ece_floor']:.4f}); RFM AUC "
              f"{r['metrics']['RFM logistic']['auc']:.3f}; winner {r['product']['winner']} "
              f"({r['product']['calibration_method']}); label disagreements with raw {r['label_disagreements_with_raw_events']}; "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        results.append(r)
    raw_con.close()

    print()
    print(markdown(results))
    print()
    print(diagnostics_markdown(results))
    if args.investigate:
        print()
        print(investigation_markdown(results))
    print()
    first_error = next((r["product"]["error_as_shipped"] for r in results if r["product"]["error_as_shipped"]), None)
    if first_error:
        failed = sum(1 for r in results if r["product"]["error_as_shipped"])
        print(f"as shipped, train_prediction failed at {failed} of {len(results)} test cutoffs: {first_error} "
              f"({ALL_MISSING_NOTE})")
        print(f"excluded (all missing in the training examples): {results[0]['product']['excluded_all_missing_columns']}")
    if args.json:
        args.json.write_text(json.dumps({"test_cutoffs": [r["test_cutoff"] for r in results], "results": results},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
