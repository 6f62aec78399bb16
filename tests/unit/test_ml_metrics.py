"""ml.metrics against small cases computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ml.metrics import (
    calibration_table,
    classification_metrics,
    decile_table,
    expected_calibration_error,
    top_share_rate,
)


def test_expected_calibration_error_by_hand():
    y = [0, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4]
    # 2 bins: {0.1, 0.2} predicts 0.15, observes 0 → 0.15; {0.3, 0.4}: 0.35 vs 1 → 0.65.
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.5 * 0.15 + 0.5 * 0.65)
    # 10 bins, 4 rows: each row its own bin → mean |p - y| = (0.1 + 0.2 + 0.7 + 0.6) / 4.
    assert expected_calibration_error(y, p) == pytest.approx(0.4)


def test_expected_calibration_error_keeps_ties_together():
    y = [0, 1, 0, 1, 1]
    p = [0.2, 0.2, 0.2, 0.8, 0.8]
    # Bins {0.2 ×3}: |0.2 − 1/3| · 3/5 = 0.08; {0.8 ×2}: |0.8 − 1| · 2/5 = 0.08.
    assert expected_calibration_error(y, p) == pytest.approx(0.16)
    table = calibration_table(y, p)
    assert [(r["examples"], r["positives"]) for r in table] == [(3, 1), (2, 2)]
    assert [r["bin"] for r in table] == [1, 2]
    # The row order does not matter.
    order = [4, 2, 0, 3, 1]
    assert calibration_table(np.take(y, order), np.take(p, order)) == table


def test_calibration_table_equal_frequency_and_tiny_inputs():
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    table = calibration_table(y, p)
    assert [r["examples"] for r in table] == [100] * 10
    means = [r["mean_probability"] for r in table]
    assert means == sorted(means)
    assert table[0]["max_probability"] <= table[1]["min_probability"]
    assert calibration_table([], []) == []
    assert len(calibration_table([1, 0, 1], [0.3, 0.6, 0.9])) == 3
    assert len(calibration_table([1, 0, 1], [0.5, 0.5, 0.5])) == 1
    assert expected_calibration_error([], []) is None


def test_tpr_fpr_by_hand():
    y = [0, 0, 1, 1, 1, 0]
    p = [0.05, 0.25, 0.35, 0.6, 0.15, 0.5]
    rows = classification_metrics(y, p)["tpr_fpr"]
    got = [(r["threshold"], r["tpr"], r["fpr"], r["share_flagged"]) for r in rows]
    expected = [
        (0.1, 3 / 3, 2 / 3, 5 / 6),
        (0.2, 2 / 3, 2 / 3, 4 / 6),
        (0.3, 2 / 3, 1 / 3, 3 / 6),
        (0.5, 1 / 3, 1 / 3, 2 / 6),  # flagged means p >= threshold
    ]
    assert got == [pytest.approx(row) for row in expected]


def test_top_decile_lift_by_hand():
    # 20 rows, 4 positives (base rate 0.2); the 2 highest probabilities are both positive.
    p = np.linspace(0.95, 0.0, 20)
    y = np.zeros(20, dtype=int)
    y[[0, 1, 10, 15]] = 1
    assert classification_metrics(y, p)["top_decile_lift"] == pytest.approx(1.0 / 0.2)
    # Ties at the cut: 0.9 (positive) then three rows at 0.8 (one positive) compete for the
    # last of 2 places → (1 + 1/3) / 2 converts in the top 10 %.
    p_tied = np.array([0.9, 0.8, 0.8, 0.8] + [0.1] * 16)
    y_tied = np.array([1, 1, 0, 0] + [1, 1] + [0] * 14)
    assert top_share_rate(y_tied, p_tied) == pytest.approx(2 / 3)
    assert classification_metrics(y_tied, p_tied)["top_decile_lift"] == pytest.approx((2 / 3) / 0.2)
    reordered = np.r_[3, 2, 1, 0, 4:20]
    assert top_share_rate(y_tied[reordered], p_tied[reordered]) == pytest.approx(2 / 3)


def test_scores_match_scikit_learn_and_are_json():
    rng = np.random.default_rng(1)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    m = classification_metrics(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert (m["examples"], m["positives"]) == (500, int(y.sum()))
    assert m["base_rate"] == pytest.approx(y.mean())
    assert m["mean_probability"] == pytest.approx(p.mean())
    json.dumps(m, allow_nan=False)
    assert type(m["examples"]) is int and type(m["auc"]) is float


def test_one_class_does_not_crash():
    m = classification_metrics([0, 0, 0], [0.1, 0.0, 1.0])
    assert m["auc"] is None and m["top_decile_lift"] is None
    assert m["tpr_fpr"][0]["tpr"] is None and m["tpr_fpr"][0]["fpr"] is not None
    assert np.isfinite(m["log_loss"])  # a confident mistake is clipped, not infinite
    json.dumps(m, allow_nan=False)
    only_positive = classification_metrics([1, 1], [0.4, 0.6])
    assert only_positive["auc"] is None and only_positive["top_decile_lift"] == pytest.approx(1.0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="only 0 and 1"):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="probabilities"):
        classification_metrics([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="has 2 values but p has 3"):
        classification_metrics([0, 1], [0.1, 0.2, 0.3])


def test_decile_table_predicted_against_realised():
    p = np.arange(1, 101) / 101
    y = (np.arange(100) % 5 == 0).astype(int)
    table = decile_table(y, p)
    assert [r["decile"] for r in table] == list(range(10, 0, -1))
    assert all(r["examples"] == 10 for r in table)
    assert table[0]["min_probability"] == pytest.approx(91 / 101)  # decile 10 = the top 10
    assert sum(r["predicted_conversions"] for r in table) == pytest.approx(p.sum())
    assert sum(r["realised_conversions"] for r in table) == int(y.sum())
    assert table[0]["realised_rate"] == pytest.approx(0.2)
    # Heavy ties: everyone shares decile 1; nothing is split by row order.
    tied = decile_table([0, 1, 1, 0], [0.3] * 4)
    assert [(r["decile"], r["examples"], r["realised_rate"]) for r in tied] == [(1, 4, 0.5)]
    assert decile_table([], []) == []
