"""Predictions and recommendations: a plain library (no Dagster import), wired by ``orchestration/``.

``ml`` never imports dagster, dbt, ``orchestration`` or the CLI. The modelling modules work on pandas
DataFrames and numpy arrays only; the run modules take a DB-API-like warehouse connection (DuckDB's)
from their caller. Modules:

- :mod:`ml.predictions` — ``run_prediction``: one run of a declared prediction (retrain when due,
  guardrails, promotion, scoring, realised-vs-predicted), what the Dagster asset calls.
- :mod:`ml.examples` — point-in-time training examples and scoring rows from the warehouse.
- :mod:`ml.tables` — the ``ml`` schema's tables and the per-prediction score tables.
- :mod:`ml.training` — ``train_prediction`` (time-split fit → calibrate → validate → pick),
  ``score`` (probability and percentile per user), ``TrainedPrediction``, ``NotEnoughExamples``.
- :mod:`ml.metrics` — JSON-ready classification, calibration and decile metrics.
- :mod:`ml.explain` — permutation importance with a direction and a marketer-readable sentence.
- :mod:`ml.store` — ``ModelStore``: skops artefacts (no pickle) with JSON metadata.

The names below are importable from ``ml`` directly but are loaded lazily, so ``import ml``
does not pull in scikit-learn.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "train_prediction": "ml.training",
    "score": "ml.training",
    "percentiles": "ml.training",
    "time_split_sizes": "ml.training",
    "TrainedPrediction": "ml.training",
    "NotEnoughExamples": "ml.training",
    "classification_metrics": "ml.metrics",
    "calibration_table": "ml.metrics",
    "decile_table": "ml.metrics",
    "expected_calibration_error": "ml.metrics",
    "feature_importance": "ml.explain",
    "ModelStore": "ml.store",
    "ModelStoreError": "ml.store",
    "ArtefactNotFound": "ml.store",
    "UntrustedArtefact": "ml.store",
    "new_model_version": "ml.store",
    "training_fingerprint": "ml.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ml' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
