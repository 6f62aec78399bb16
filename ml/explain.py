"""Which features drive a prediction, in words a marketer understands.

Two questions, answered separately because one number cannot answer both:

- *How much does the model rely on this feature?* Permutation importance on held-out
  (validation) data: shuffle one column, measure how much the AUC drops. It works for any
  model (the calibrated logistic regression and the calibrated gradient boosting alike), it
  measures reliance on data the model did not train on, and "AUC drop" has a plain reading.
- *Which way does it push?* The Spearman rank correlation between the feature and the
  model's own predicted probability. A rank correlation is used because features such as
  "days since the last event" are heavy-tailed and the relation need not be linear; rows
  where the feature is missing are left out. A weak correlation (``|rho| < 0.1``) is reported
  as "mixed": the feature matters, but not monotonically (or only through its missingness).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# Below this absolute Spearman correlation a direction is not claimed.
DIRECTION_MIN_CORRELATION = 0.1


def describe(column: str, descriptions: Mapping[str, str] | None) -> str:
    """The marketer-readable phrase for a feature column (fallback: underscores as spaces)."""
    if descriptions and descriptions.get(column):
        return descriptions[column]
    return column.replace("_", " ")


def _direction(values: np.ndarray, probability: np.ndarray) -> tuple[str, float | None]:
    from scipy.stats import spearmanr

    known = ~np.isnan(values)
    if known.sum() < 3:
        return "mixed", None
    x, p = values[known], probability[known]
    if np.all(x == x[0]) or np.all(p == p[0]):
        return "mixed", None
    rho = float(spearmanr(x, p).statistic)
    if not np.isfinite(rho):
        return "mixed", None
    if rho >= DIRECTION_MIN_CORRELATION:
        return "higher", rho
    if rho <= -DIRECTION_MIN_CORRELATION:
        return "lower", rho
    return "mixed", rho


def _sentence(description: str, direction: str, importance: float) -> str:
    drop = f"AUC \u2212{importance:.3f} without it"
    if direction == "higher":
        return f"More {description} \u2192 more likely ({drop})"
    if direction == "lower":
        return f"More {description} \u2192 less likely ({drop})"
    return f"{description[:1].upper()}{description[1:]} matters, not in one direction ({drop})"


def feature_importance(
    model: Any,
    frame: pd.DataFrame,
    y: Any,
    feature_columns: Sequence[str],
    *,
    descriptions: Mapping[str, str] | None = None,
    seed: int = 0,
    max_rows: int = 20_000,
    top: int = 10,
    n_repeats: int = 3,
) -> list[dict[str, Any]]:
    """Rank features by how much the model needs them, with a direction and a sentence.

    ``model`` is a fitted classifier with ``predict_proba`` taking ``frame[feature_columns]``;
    ``frame`` / ``y`` should be validation data (not the data the model was fitted on).
    At most ``max_rows`` rows are used, sampled with ``seed`` so the result is reproducible.

    Returns at most ``top`` dicts, most important first, leaving out features whose
    importance is not positive (the model does not lose anything without them)::

        {"feature": "purchases_30d", "description": "purchases in the last 30 days",
         "importance": 0.041, "importance_std": 0.002, "direction": "higher",
         "correlation": 0.52,
         "sentence": "More purchases in the last 30 days → more likely (AUC −0.041 without it)"}

    ``importance`` is the mean drop in ROC AUC over ``n_repeats`` shuffles. An empty list is
    returned when ``y`` has a single class (AUC, hence the drop, is undefined).
    """
    from sklearn.inspection import permutation_importance

    columns = list(feature_columns)
    X = frame[columns]
    labels = np.asarray(y, dtype=int).ravel()
    if labels.size != len(X):
        raise ValueError(f"frame has {len(X)} rows but y has {labels.size}")
    if len(np.unique(labels)) < 2:
        return []
    if len(X) > max_rows:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(X), size=max_rows, replace=False))
        X = X.iloc[keep]
        labels = labels[keep]
        if len(np.unique(labels)) < 2:
            return []

    result = permutation_importance(
        model, X, labels, scoring="roc_auc", n_repeats=n_repeats, random_state=seed, n_jobs=1
    )
    probability = model.predict_proba(X)[:, 1]

    rows = []
    for i, column in enumerate(columns):
        importance = float(result.importances_mean[i])
        if not importance > 0:
            continue
        values = pd.to_numeric(X[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        direction, rho = _direction(values, probability)
        description = describe(column, descriptions)
        rows.append(
            {
                "feature": column,
                "description": description,
                "importance": importance,
                "importance_std": float(result.importances_std[i]),
                "direction": direction,
                "correlation": rho,
                "sentence": _sentence(description, direction, importance),
            }
        )
    # Ties (rare) are broken by column name so the order never depends on dict/array order.
    rows.sort(key=lambda row: (-row["importance"], row["feature"]))
    return rows[:top]
