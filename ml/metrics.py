"""Metrics for a binary "goal within N days" prediction, as plain JSON-serialisable values.

Every function here takes the realised labels ``y_true`` (0/1) and the predicted probabilities
``p`` and returns plain Python ``float`` / ``int`` / ``None`` / ``list`` / ``dict`` values, so the
result can be written to run metadata, a JSON file or a warehouse table without conversion.

Binning convention (shared by :func:`calibration_table`, :func:`expected_calibration_error` and
:func:`decile_table`, and by the percentile in :func:`ml.training.score`)::

    lower_i = number of rows whose probability is strictly lower than p_i
    bin_i   = floor(bins * lower_i / N)            # 0 .. bins-1

Without ties this gives equal-frequency bins (sizes differ by at most one). With ties, rows
with the same probability always land in the same bin, so the tables do not depend on the
row order and never split a plateau of an isotonic calibrator across bins; bins that receive
no row are simply absent. With fewer rows than bins every row is its own bin. This is the same
rule that turns a probability into a percentile (``floor(100 * lower / N)``), so "users at
percentile 90 and above" is exactly decile 10 in :func:`decile_table`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

# Probabilities are clipped away from 0 and 1 before the log loss: one confident mistake
# would otherwise make it infinite (and not JSON-serialisable).
_EPS = 1e-15


def _as_arrays(y_true: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).ravel()
    q = np.asarray(p, dtype=float).ravel()
    if y.shape != q.shape:
        raise ValueError(f"y_true has {y.size} values but p has {q.size}")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if q.size and not (np.isfinite(q).all() and q.min() >= 0.0 and q.max() <= 1.0):
        raise ValueError("p must contain probabilities in [0, 1] (no NaN)")
    return y.astype(int), q


def strictly_lower_counts(p: Any) -> np.ndarray:
    """For each value, how many values in ``p`` are strictly lower (ties share the count)."""
    q = np.asarray(p, dtype=float).ravel()
    if q.size == 0:
        return np.zeros(0, dtype=np.int64)
    return (rankdata(q, method="min") - 1).astype(np.int64)


def quantile_bins(p: Any, bins: int) -> np.ndarray:
    """Bin index 0..bins-1 per value: ``floor(bins * lower / N)`` (see the module docstring)."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    lower = strictly_lower_counts(p)
    if lower.size == 0:
        return lower
    return (bins * lower) // lower.size


def _grouped(y: np.ndarray, q: np.ndarray, bins: int) -> list[dict[str, Any]]:
    index = quantile_bins(q, bins)
    rows = []
    for number, b in enumerate(np.unique(index), start=1):
        mask = index == b
        rows.append(
            {
                "bin": number,
                "examples": int(mask.sum()),
                "positives": int(y[mask].sum()),
                "min_probability": float(q[mask].min()),
                "max_probability": float(q[mask].max()),
                "mean_probability": float(q[mask].mean()),
                "observed_rate": float(y[mask].mean()),
            }
        )
    return rows


def calibration_table(y_true: Any, p: Any, bins: int = 10) -> list[dict[str, Any]]:
    """Mean predicted probability against the observed rate, per equal-frequency bin.

    Returns one dict per non-empty bin, lowest probabilities first: ``bin`` (1-based),
    ``examples``, ``positives``, ``min_probability``, ``max_probability``,
    ``mean_probability``, ``observed_rate``. Equal-frequency bins (rather than fixed-width
    0.0–0.1, 0.1–0.2 … bins) keep every bin populated when most probabilities are small, which
    is the normal case for conversion goals. An empty input gives an empty list.
    """
    y, q = _as_arrays(y_true, p)
    return _grouped(y, q, bins)


def expected_calibration_error(y_true: Any, p: Any, bins: int = 10) -> float | None:
    """Expected calibration error: ``sum over bins of (bin share) * |mean predicted - observed|``.

    Uses the equal-frequency bins of :func:`calibration_table`. 0 means that, within every
    bin, the model predicts on average exactly the rate that happened. ``None`` for no rows.
    """
    y, q = _as_arrays(y_true, p)
    if y.size == 0:
        return None
    return float(
        sum(
            row["examples"] / y.size * abs(row["mean_probability"] - row["observed_rate"])
            for row in _grouped(y, q, bins)
        )
    )


def decile_table(y_true: Any, p: Any) -> list[dict[str, Any]]:
    """Predicted against realised conversion per probability decile (decile 10 = most likely).

    Used to compare what a model promised with what happened once the horizon has passed: for
    each decile, ``examples``, ``predicted_rate`` (mean probability), ``realised_rate``,
    ``predicted_conversions`` (sum of probabilities, the expected number of conversions) and
    ``realised_conversions``. Deciles follow the score percentile: decile ``d`` holds the users
    whose percentile is in ``[10 * (d - 1), 10 * d)``; tied users share a decile, so with heavy
    ties some deciles are absent. Rows are ordered from decile 10 (highest) down.
    """
    y, q = _as_arrays(y_true, p)
    if y.size == 0:
        return []
    decile = quantile_bins(q, 10) + 1
    rows = []
    for d in sorted(np.unique(decile), reverse=True):
        mask = decile == d
        rows.append(
            {
                "decile": int(d),
                "examples": int(mask.sum()),
                "min_probability": float(q[mask].min()),
                "max_probability": float(q[mask].max()),
                "predicted_rate": float(q[mask].mean()),
                "realised_rate": float(y[mask].mean()),
                "predicted_conversions": float(q[mask].sum()),
                "realised_conversions": int(y[mask].sum()),
            }
        )
    return rows


def top_share_rate(y_true: Any, p: Any, share: float = 0.1) -> float | None:
    """Conversion rate among the ``ceil(share * N)`` rows with the highest probability.

    Ties at the boundary are resolved by expectation, not by row order: when only some of
    the rows tied at the cut-off probability fit, they contribute their average outcome
    pro rata. The result is therefore what a random tie-break would give on average, and it
    is the same for any row order.
    """
    y, q = _as_arrays(y_true, p)
    if y.size == 0:
        return None
    k = max(1, math.ceil(share * y.size))
    order = np.sort(q)[::-1]
    cut = order[k - 1]
    above = q > cut
    at = q == cut
    taken_at = k - int(above.sum())
    conversions = y[above].sum() + taken_at * y[at].mean()
    return float(conversions / k)


def classification_metrics(
    y_true: Any,
    p: Any,
    *,
    thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.5),
    bins: int = 10,
) -> dict[str, Any]:
    """All the numbers a model is judged by, on one set of examples.

    Returns a dict of plain Python values:

    - ``auc``: ROC AUC (ranking quality); ``None`` when only one class is present, where it
      is undefined.
    - ``log_loss``: mean negative log-likelihood (probabilities clipped to [1e-15, 1 - 1e-15]).
      Lower is better; it rewards both ranking and honest probabilities.
    - ``brier``: mean squared error of the probability.
    - ``base_rate``, ``mean_probability``: observed and predicted share of positives. A
      calibrated model has them close.
    - ``examples``, ``positives``.
    - ``tpr_fpr``: per threshold, ``{threshold, tpr, fpr, share_flagged}`` where a row is
      flagged when ``p >= threshold``; ``tpr``/``fpr`` are ``None`` when the class is absent.
    - ``top_decile_lift``: conversion rate in the top 10 % by probability divided by the base
      rate (see :func:`top_share_rate` for ties); ``None`` when the base rate is 0.
    - ``calibration_error``: :func:`expected_calibration_error` over ``bins`` bins.
    """
    y, q = _as_arrays(y_true, p)
    n = int(y.size)
    positives = int(y.sum())
    negatives = n - positives
    base_rate = positives / n if n else None

    from sklearn import metrics as skm

    auc = float(skm.roc_auc_score(y, q)) if positives and negatives else None
    log_loss = brier = None
    if n:
        clipped = np.clip(q, _EPS, 1 - _EPS)
        log_loss = float(skm.log_loss(y, clipped, labels=[0, 1]))
        brier = float(skm.brier_score_loss(y, q, pos_label=1)) if positives and negatives else float(np.mean((q - y) ** 2))

    tpr_fpr = []
    for threshold in thresholds:
        flagged = q >= threshold
        tpr_fpr.append(
            {
                "threshold": float(threshold),
                "tpr": float((flagged & (y == 1)).sum() / positives) if positives else None,
                "fpr": float((flagged & (y == 0)).sum() / negatives) if negatives else None,
                "share_flagged": float(flagged.mean()) if n else None,
            }
        )

    lift = None
    if positives:
        lift = float(top_share_rate(y, q, 0.1) / base_rate)

    return {
        "auc": auc,
        "log_loss": log_loss,
        "brier": brier,
        "base_rate": float(base_rate) if base_rate is not None else None,
        "mean_probability": float(q.mean()) if n else None,
        "examples": n,
        "positives": positives,
        "tpr_fpr": tpr_fpr,
        "top_decile_lift": lift,
        "calibration_error": expected_calibration_error(y, q, bins),
    }
