"""Recommendations: which items to show each user, chosen by a time-split contest. A plain library.

No Dagster, dbt or DuckDB here: inputs are pandas frames (interactions and the item catalogue, as
the dbt export models provide them), outputs are a fitted model, JSON-ready metrics and a
recommendation frame the caller writes to the warehouse. Modules:

- :mod:`ml.recommend.data` — ``build_matrix`` (user × item CSR of summed weights with stable, sorted
  index maps), ``time_split``, ``relevant_items``.
- :mod:`ml.recommend.candidates` — the models behind one interface (``fit`` / ``recommend``):
  popularity, trending, item-kNN (cosine, BM25), EASE, ALS, BPR, content (TF-IDF), hybrid.
- :mod:`ml.recommend.metrics` — precision / recall / NDCG / hit rate @k, coverage, Gini, long tail.
- :mod:`ml.recommend.selection` — ``select_recommender``: grid on a holdout before ``as_of`` under a
  time budget, winner by recall among candidates with enough coverage, refit.
- :mod:`ml.recommend.serve` — ``recommend_for_users``: model, fallback for newcomers, random
  control group, exclusions for everyone.

Threads: callers set ``OPENBLAS_NUM_THREADS=1`` before numpy is imported (the Makefile exports it);
implicit is much slower with OpenBLAS's own thread pool. The models also limit BLAS to one thread
around their own calls with threadpoolctl.

The names below are loaded lazily, so ``import ml.recommend`` does not import implicit or
scikit-learn.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "InteractionMatrix": "ml.recommend.data",
    "TimeSplit": "ml.recommend.data",
    "build_matrix": "ml.recommend.data",
    "time_split": "ml.recommend.data",
    "relevant_items": "ml.recommend.data",
    "Recommender": "ml.recommend.candidates",
    "MODELS": "ml.recommend.candidates",
    "make_recommender": "ml.recommend.candidates",
    "ranking_metrics": "ml.recommend.metrics",
    "gini": "ml.recommend.metrics",
    "Selection": "ml.recommend.selection",
    "DEFAULT_GRID": "ml.recommend.selection",
    "select_recommender": "ml.recommend.selection",
    "recommend_for_users": "ml.recommend.serve",
    "control_assignment": "ml.recommend.serve",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ml.recommend' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
