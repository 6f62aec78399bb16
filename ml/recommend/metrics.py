"""Top-k ranking metrics for recommendations, as plain JSON-serialisable values.

Every function takes, per user, the recommended items in rank order and the relevant items (what
the user converted on in the test period, see :func:`ml.recommend.data.relevant_items`). Items are
any hashable keys (ids or matrix columns); ``-1`` and ``None`` in a recommended list are padding
(fewer than k items were available) and are ignored.

Definitions (``rec_k`` = the first k recommended items, ``rel`` = the relevant set, binary gains):

- ``precision_at_k`` = ``|rec_k ∩ rel| / k`` (k even when fewer items were recommended: an empty
  slot is a wasted slot).
- ``recall_at_k`` = ``|rec_k ∩ rel| / min(k, |rel|)``: the *normalised* recall of Liang et al.
  (2018) and Steck (2019, EASE). 1.0 means the top k could not have held more relevant items, so a
  user who bought 30 items is not held to an impossible standard. This is the recall used to pick a
  winner. ``plain_recall_at_k`` = ``|rec_k ∩ rel| / |rel|`` is reported beside it.
- ``ndcg_at_k`` = ``DCG / IDCG`` with ``DCG = Σ_hits 1 / log2(rank + 1)`` (rank from 1) and IDCG the
  DCG of ``min(k, |rel|)`` hits in the first ranks.
- ``hit_rate_at_k`` = share of users with at least one relevant item in the top k.

These are averaged over users with at least one relevant item; users without any are counted in
``users_without_relevant`` and otherwise ignored (they say nothing about accuracy).

Distribution metrics are computed on the top-k lists of *all* users passed in:

- ``coverage`` = share of the candidate items recommended to at least one user. The answer to
  "popularity lock-in": a model that shows everyone the same ten bestsellers covers 10 items.
- ``gini`` = Gini coefficient of the number of times each candidate item is recommended (never
  recommended candidates count as 0): 0 = every item shown equally often, → 1 = all slots on one item.
- ``long_tail_share`` = share of the recommendation slots filled with long-tail items, the long tail
  being the candidate items outside the ``head_share`` (20 %) most popular candidates.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def _top_k(items: Iterable[Any], k: int) -> list[Any]:
    out = []
    for item in items:
        if item is None or (isinstance(item, (int, np.integer)) and item < 0):
            continue
        out.append(item.item() if isinstance(item, np.generic) else item)
        if len(out) == k:
            break
    return out


def _user_scores(top: list[Any], relevant: Collection[Any], k: int) -> dict[str, float]:
    hits = [rank for rank, item in enumerate(top, start=1) if item in relevant]
    found = len(hits)
    ideal = min(k, len(relevant))
    dcg = sum(1.0 / math.log2(rank + 1) for rank in hits)
    idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, ideal + 1))
    return {
        "precision": found / k,
        "recall": found / ideal,
        "plain_recall": found / len(relevant),
        "ndcg": dcg / idcg,
        "hit": 1.0 if found else 0.0,
    }


def gini(counts: Any) -> float | None:
    """Gini coefficient of non-negative counts: 0 = equal, ``1 - 1/n`` = all on one element.

    ``G = Σ_i (2i - n - 1) x_(i) / (n Σ x)`` over the counts sorted ascending (i from 1).
    ``None`` for no elements or an all-zero input (nothing was recommended).
    """
    x = np.sort(np.asarray(counts, dtype=np.float64).ravel())
    n = x.size
    if n == 0 or x.sum() == 0:
        return None
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * x.sum()))


def ranking_metrics(
    recommended: Sequence[Sequence[Any]] | np.ndarray,
    relevant: Sequence[Collection[Any]],
    *,
    k: int = 10,
    candidate_items: Collection[Hashable] | None = None,
    item_popularity: Mapping[Hashable, float] | None = None,
    head_share: float = 0.2,
) -> dict[str, Any]:
    """Accuracy and distribution metrics of top-k lists (see the module docstring).

    Parameters
    ----------
    recommended
        Per user, the recommended items best first (a list of lists, or a 2-D array padded with -1).
    relevant
        Per user (same order), the relevant items; empty for users with none.
    k
        The list length judged.
    candidate_items
        The items that could have been recommended: the denominator of ``coverage`` and the
        population of ``gini`` / ``long_tail_share`` (``None``: those three are ``None``).
        Recommended items outside it are ignored by the three.
    item_popularity
        Popularity per item (e.g. training interactions) defining the head for
        ``long_tail_share``; ties go to the smaller item key. ``None``: ``long_tail_share`` is ``None``.

    Returns a dict of plain Python values: ``k``, ``users`` (with ≥1 relevant item),
    ``users_without_relevant``, ``precision_at_k``, ``recall_at_k``, ``plain_recall_at_k``,
    ``ndcg_at_k``, ``hit_rate_at_k`` (``None`` when no user has a relevant item), ``coverage``,
    ``items_recommended``, ``candidate_items``, ``gini``, ``long_tail_share``.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if len(recommended) != len(relevant):
        raise ValueError(f"recommended has {len(recommended)} users but relevant has {len(relevant)}")

    totals = {"precision": 0.0, "recall": 0.0, "plain_recall": 0.0, "ndcg": 0.0, "hit": 0.0}
    users = 0
    without = 0
    shown: dict[Any, int] = {}
    slots = 0
    for items, rel in zip(recommended, relevant):
        top = _top_k(items, k)
        for item in top:
            shown[item] = shown.get(item, 0) + 1
        slots += len(top)
        rel_set = set(rel.tolist() if isinstance(rel, np.ndarray) else rel)
        if not rel_set:
            without += 1
            continue
        users += 1
        for key, value in _user_scores(top, rel_set, k).items():
            totals[key] += value

    def mean(key: str) -> float | None:
        return totals[key] / users if users else None

    coverage = gini_value = long_tail = None
    candidates_count = items_recommended = None
    if candidate_items is not None:
        candidates = set(candidate_items)
        candidates_count = len(candidates)
        counts = {item: shown.get(item, 0) for item in candidates}
        items_recommended = sum(1 for value in counts.values() if value)
        coverage = items_recommended / candidates_count if candidates_count else None
        gini_value = gini(list(counts.values()))
        if item_popularity is not None and candidates_count:
            ranked = sorted(candidates, key=lambda item: (-float(item_popularity.get(item, 0.0)), item))
            head = set(ranked[: math.ceil(head_share * candidates_count)])
            in_candidates = sum(counts.values())
            tail = sum(value for item, value in counts.items() if item not in head)
            long_tail = tail / in_candidates if in_candidates else None

    return {
        "k": int(k),
        "users": users,
        "users_without_relevant": without,
        "precision_at_k": mean("precision"),
        "recall_at_k": mean("recall"),
        "plain_recall_at_k": mean("plain_recall"),
        "ndcg_at_k": mean("ndcg"),
        "hit_rate_at_k": mean("hit"),
        "coverage": coverage,
        "items_recommended": items_recommended,
        "candidate_items": candidates_count,
        "gini": gini_value,
        "long_tail_share": long_tail,
        "recommendation_slots": slots,
    }
