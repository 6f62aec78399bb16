"""ml.training: time-split training on synthetic data whose answers are planted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from ml.training import NotEnoughExamples, TrainedPrediction, percentiles, ranking_scores, score, train_prediction

FEATURES = ["recent_purchases", "days_since_last_event", "noise"]
DESCRIPTIONS = {
    "recent_purchases": "purchases in the last 30 days",
    "days_since_last_event": "days since the last event",
}


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine is shared: OpenMP spin-waiting on a busy core makes gradient boosting
    # several times slower with 2 threads than with 1. Results do not depend on it.
    with threadpool_limits(limits=1):
        yield


def planted(users=3000, cutoffs=6, *, intercept=-0.5, seed=0):
    """Weekly cutoffs; P(label) = sigmoid(intercept + 0.8·purchases − 0.08·days + noise).

    ``days_since_last_event`` is NaN for ~10 % of users ("never active"), treated as 60 days
    by the truth. ``noise`` has no effect. ``p_true`` is kept for calibration checks.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(cutoffs):
        purchases = rng.poisson(1.5, users).astype(float)
        days = rng.exponential(20, users)
        days[rng.random(users) < 0.1] = np.nan
        logit = (
            intercept
            + 0.8 * purchases
            - 0.08 * np.nan_to_num(days, nan=60.0)
            + rng.normal(scale=0.3, size=users)
        )
        p_true = 1 / (1 + np.exp(-logit))
        frames.append(
            pd.DataFrame(
                {
                    "user_id": [f"u{i:05d}" for i in range(users)],
                    "cutoff_at": pd.Timestamp("2024-01-01") + pd.Timedelta(weeks=k),
                    "label": (rng.random(users) < p_true).astype(int),
                    "recent_purchases": purchases,
                    "days_since_last_event": days,
                    "noise": rng.normal(size=users),
                    "p_true": p_true,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def examples():
    return planted()


@pytest.fixture(scope="module")
def trained(examples):
    with threadpool_limits(limits=1):
        return train_prediction(examples, FEATURES, descriptions=DESCRIPTIONS, seed=0)


def latest(frame, n=1):
    cutoffs = sorted(frame["cutoff_at"].unique())[-n:]
    return frame[frame["cutoff_at"].isin(cutoffs)]


def test_planted_signal_is_learnt_and_calibrated(trained, examples):
    assert isinstance(trained, TrainedPrediction)
    assert trained.model_name in {"logistic", "gradient_boosting"}
    assert set(trained.candidates) == {"logistic", "gradient_boosting"}
    assert trained.metrics["auc"] >= 0.75
    assert trained.metrics["calibration_error"] <= 0.03
    # The winner is the lowest validation log loss, and every candidate beats the constant.
    assert trained.metrics["log_loss"] == min(c["log_loss"] for c in trained.candidates.values())
    for report in trained.candidates.values():
        assert report["log_loss"] < report["baseline_log_loss"]
        assert report["beats_baseline"] is True
    # The reported metrics are the winner's on the latest cutoff, before it was used in any way; the
    # model that serves is that winner recalibrated on the calibration and validation cutoffs.
    validation = latest(examples)
    p = trained.predict(validation)
    assert trained.metrics["examples"] == len(validation)
    assert trained.metrics["mean_probability"] == pytest.approx(p.mean(), abs=0.02)
    assert abs(p.mean() - validation["label"].mean()) < 0.01  # recalibrated on it: the level is right
    served = trained.summary["served_calibration"]
    assert served["cutoffs"] == trained.summary["calibration_cutoffs"] + trained.summary["validation_cutoffs"]
    assert sum(row["examples"] for row in trained.calibration_table) == len(validation)


def test_importance_ranks_planted_features_with_their_direction(trained):
    top = trained.importance[:2]
    assert {row["feature"] for row in top} == {"recent_purchases", "days_since_last_event"}
    by_feature = {row["feature"]: row for row in trained.importance}
    assert by_feature["recent_purchases"]["direction"] == "higher"
    assert by_feature["days_since_last_event"]["direction"] == "lower"
    assert by_feature["recent_purchases"]["sentence"].startswith(
        "More purchases in the last 30 days \u2192 more likely (AUC \u2212"
    )
    assert by_feature["days_since_last_event"]["description"] == "days since the last event"
    importances = [row["importance"] for row in trained.importance]
    assert importances == sorted(importances, reverse=True) and min(importances) > 0


def test_validation_is_the_latest_cutoffs(trained, examples):
    cutoffs = [pd.Timestamp(c).isoformat() for c in sorted(examples["cutoff_at"].unique())]
    summary = trained.summary
    assert summary["cutoffs"]["validation"] == cutoffs[-1:]
    assert summary["cutoffs"]["calibration"] == cutoffs[-2:-1]
    assert summary["cutoffs"]["fit"] == cutoffs[:-2]
    assert summary["validation_cutoffs"] == summary["cutoffs"]["validation"]
    # Every validation example is later than every calibration and fit example.
    assert min(summary["validation_cutoffs"]) > max(summary["calibration_cutoffs"])
    assert min(summary["calibration_cutoffs"]) > max(summary["fit_cutoffs"])
    assert summary["examples"] == {"fit": 12000, "calibration": 3000, "validation": 3000}
    assert summary["positives"]["validation"] == int(latest(examples)["label"].sum())
    assert summary["subsampled"] is False and summary["seed"] == 0
    calibration = examples[examples["cutoff_at"] == sorted(examples["cutoff_at"].unique())[-2]]
    smaller_class = min(calibration["label"].sum(), (1 - calibration["label"]).sum())
    assert summary["calibration_method"] == ("isotonic" if smaller_class >= 1000 else "sigmoid")


def test_validation_labels_do_not_reach_the_fitted_model(examples):
    """Permuting labels inside the validation cutoff changes the metrics, not the fitted model.

    (They do reach the calibration of the model that serves, on purpose: see served_calibration.)
    """
    rng = np.random.default_rng(1)
    scrambled = examples.copy()
    in_validation = scrambled["cutoff_at"] == scrambled["cutoff_at"].max()
    scrambled.loc[in_validation, "label"] = rng.permutation(
        scrambled.loc[in_validation, "label"].to_numpy()
    )
    kwargs = dict(candidates=("logistic",), seed=0)
    honest = train_prediction(examples, FEATURES, **kwargs)
    blind = train_prediction(scrambled, FEATURES, **kwargs)
    assert np.array_equal(
        ranking_scores(honest.model, examples, FEATURES), ranking_scores(blind.model, examples, FEATURES)
    )
    assert honest.metrics["auc"] > 0.75 > blind.metrics["auc"]


def test_row_order_and_repeat_do_not_change_probabilities(examples, trained):
    shuffled = examples.sample(frac=1.0, random_state=7)
    again = train_prediction(shuffled, FEATURES, descriptions=DESCRIPTIONS, seed=0)
    assert again.model_name == trained.model_name
    assert np.array_equal(again.predict(examples), trained.predict(examples))
    assert again.metrics == trained.metrics
    assert again.importance == trained.importance


def test_calibration_fixes_a_subsampled_skewed_fit():
    """5 % base rate, fit set subsampled to balanced: raw scores are far too high; calibrated
    probabilities match both the observed rates and the known true probabilities."""
    data = planted(users=4000, intercept=-3.2, seed=3)
    fit_positives = int(data[data["cutoff_at"] < sorted(data["cutoff_at"].unique())[-2]]["label"].sum())
    trained = train_prediction(
        data, FEATURES, seed=0, max_training_examples=2 * fit_positives, min_class_examples=100
    )
    summary = trained.summary
    assert summary["subsampled"] is True
    assert summary["fit_positives_used"] == fit_positives  # every positive kept
    assert summary["fit_examples_used"] == 2 * fit_positives

    raw = trained.candidates["gradient_boosting"]["uncalibrated"]
    metrics = trained.metrics
    assert metrics["base_rate"] < 0.08
    assert raw["mean_probability"] > 3 * metrics["base_rate"]  # the subsampling bias
    assert metrics["calibration_error"] < 0.02
    assert metrics["calibration_error"] < raw["calibration_error"] / 5
    assert metrics["mean_probability"] == pytest.approx(metrics["base_rate"], abs=0.015)
    # Against the known truth: on average right, and per user much closer than the constant.
    validation = latest(data)
    truth = validation["p_true"].to_numpy()
    p = trained.predict(validation)
    assert p.mean() == pytest.approx(truth.mean(), abs=0.01)
    assert np.abs(p - truth).mean() < 0.6 * np.abs(truth.mean() - truth).mean()


def test_isotonic_when_calibration_is_large_and_never_0_or_1():
    data = planted(users=7000, cutoffs=4, intercept=0.5, seed=5)
    trained = train_prediction(data, FEATURES, seed=0, candidates=("gradient_boosting",))
    assert trained.summary["calibration_method"] == "isotonic"
    assert trained.summary["isotonic_probability_bound"] == pytest.approx(1 / (7000 + 2))
    # The served model is recalibrated on calibration + validation (14,000 examples), bounded the same way.
    served = trained.summary["served_calibration"]
    assert served["method"] == "isotonic" and served["isotonic_probability_bound"] == pytest.approx(1 / (14000 + 2))
    p = trained.predict(data)
    assert p.min() >= served["isotonic_probability_bound"] and p.max() <= 1 - served["isotonic_probability_bound"]


def test_too_few_positives_is_refused_with_counts(examples):
    rare = examples.copy()
    rare["label"] = 0
    fit_rows = rare.index[rare["cutoff_at"] < sorted(rare["cutoff_at"].unique())[-2]]
    rare.loc[fit_rows[:37], "label"] = 1
    rare.loc[rare["cutoff_at"] >= sorted(rare["cutoff_at"].unique())[-2], "label"] = examples["label"]
    with pytest.raises(NotEnoughExamples) as caught:
        train_prediction(rare, FEATURES, name="purchase_7d")
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.positives, error.negatives, error.minimum) == (37, 11963, 100)
    assert error.split == "fit"
    message = str(error)
    assert message.startswith("purchase_7d needs at least 100 positive and 100 negative examples")
    assert "training 37 positive, 11,963 negative (fit cutoffs 2024-01-01..2024-01-22)" in message


def test_too_few_cutoffs_is_refused(examples):
    with pytest.raises(NotEnoughExamples, match="needs at least 3 distinct cutoffs.*got 2"):
        train_prediction(latest(examples, 2), FEATURES)


def test_duplicate_user_cutoff_is_refused(examples):
    with pytest.raises(ValueError, match="one row per"):
        train_prediction(pd.concat([examples, examples.head(1)]), FEATURES)


def test_score_returns_probability_and_percentile(trained, examples):
    frame = latest(examples).sample(frac=1.0, random_state=3)
    scored = score(trained.model, frame, FEATURES)
    assert list(scored.columns) == ["user_id", "probability", "percentile"]
    assert scored["user_id"].tolist() == frame["user_id"].tolist()
    assert np.array_equal(scored["probability"].to_numpy(), trained.predict(frame))
    assert scored.equals(score(trained, frame, FEATURES))


def test_percentile_definition():
    p = np.array([0.5, 0.1, 0.9, 0.1, 0.3, 0.9, 0.2, 0.7])
    got = percentiles(p)
    # strictly lower counts: 0.1→0, 0.2→2, 0.3→3, 0.5→4, 0.7→5, 0.9→6; floor(100·k/8)
    assert got.tolist() == [50, 0, 75, 0, 37, 75, 25, 62]
    rng = np.random.default_rng(0)
    many = np.round(rng.random(5000), 2)  # plenty of ties
    pct = percentiles(many)
    order = np.argsort(many, kind="stable")
    assert np.all(np.diff(pct[order]) >= 0)  # monotone in probability
    for value in np.unique(many)[:20]:
        assert len(set(pct[many == value])) == 1  # ties equal
    assert pct[np.argmax(many)] == pct.max()  # the top user has the highest percentile
    assert pct.min() == 0 and 0 <= pct.max() <= 100
    assert percentiles(np.array([0.4])).tolist() == [0]
    assert percentiles(np.array([])).tolist() == []


def test_ml_does_not_import_the_platform():
    code = (
        "import sys, ml, ml.training, ml.metrics, ml.explain, ml.store\n"
        "bad = sorted(m for m in sys.modules if m == 'cohortflow.cli' or m.split('.')[0] in "
        "{'dagster', 'dbt', 'duckdb', 'orchestration'})\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_time_split_sizes_give_rare_outcomes_several_weeks_and_common_ones_the_latest() -> None:
    from ml.training import time_split_sizes

    cutoffs = pd.date_range("2024-01-01", periods=10, freq="7D")
    # A common outcome: 150 positives and 850 negatives a week -> one week each.
    common = pd.DataFrame({"cutoff_at": cutoffs.repeat(1000), "label": ([1] * 150 + [0] * 850) * 10})
    assert time_split_sizes(common["cutoff_at"], common["label"], min_class_examples=100) == (1, 1)
    # A rare one: 40 positives a week -> three weeks to validate (the latest), three before to calibrate.
    rare = pd.DataFrame({"cutoff_at": cutoffs.repeat(1000), "label": ([1] * 40 + [0] * 960) * 10})
    assert time_split_sizes(rare["cutoff_at"], rare["label"], min_class_examples=100) == (3, 3)
    # Too rare for 60 % of the history: the smallest split, left to the guardrail to refuse.
    rarer = pd.DataFrame({"cutoff_at": cutoffs.repeat(1000), "label": ([1] * 5 + [0] * 995) * 10})
    assert time_split_sizes(rarer["cutoff_at"], rarer["label"], min_class_examples=100) == (1, 1)


def test_percentiles_break_probability_ties_by_the_score_before_calibration() -> None:
    # Isotonic calibration gives whole ranges of users one probability: five plateaus here.
    rng = np.random.default_rng(0)
    probability = rng.integers(0, 5, 1000) / 10
    before_calibration = rng.random(1000)
    plain, ranked = percentiles(probability), percentiles(probability, before_calibration)
    assert (plain >= 90).mean() == 0.0  # the top plateau (~20 % of users) sits at percentile 80
    assert (ranked >= 90).mean() == 0.1  # "the top 10 %" holds 10 %
    # Still ordered by probability first: a higher probability never gets a lower percentile.
    assert np.all(np.diff(ranked[np.lexsort((before_calibration, probability))]) >= 0)


def test_a_feature_without_any_value_is_left_out_not_fatal() -> None:
    # Purchase-only data (Online Retail) has no views or carts: their ratios are NULL everywhere,
    # which made the gradient boosting fail ("window shape cannot be larger than input array shape").
    rng = np.random.default_rng(0)
    n = 6000
    frame = pd.DataFrame({
        "user_id": [f"u{i % 2000}" for i in range(n)],
        "cutoff_at": pd.Timestamp("2024-01-01") + pd.to_timedelta((np.arange(n) // 2000) * 7, unit="D"),
        "orders_90d": rng.poisson(2, n).astype(float),
        "view_to_add_to_cart_ratio_30d": np.nan,
    })
    frame["label"] = (rng.random(n) < 0.1 + 0.05 * frame["orders_90d"].clip(0, 4)).astype(int)
    trained = train_prediction(frame, ["orders_90d", "view_to_add_to_cart_ratio_30d"], seed=0)
    assert trained.feature_columns == ["orders_90d"]
    assert trained.summary["dropped_features"] == {"view_to_add_to_cart_ratio_30d": "no value in any example"}
    assert score(trained, frame, trained.feature_columns)["probability"].between(0, 1).all()
