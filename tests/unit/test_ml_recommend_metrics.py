"""ml.recommend.metrics against small cases computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ml.recommend.metrics import gini, ranking_metrics

# k = 3. Four users:
#   a: top 3 = [1, 2, 3], relevant {2, 4}          → 1 hit at rank 2
#   b: top 3 = [5, 6] (one empty slot), relevant {5, 7, 8, 9} → 1 hit at rank 1
#   c: top 3 = [7, 8, 9], nothing relevant         → not averaged, but counted for coverage
#   d: top 3 = [1, 3, 6], relevant {10}            → no hit
RECOMMENDED = [[1, 2, 3, 4], [5, 6, -1], [7, 8, 9], [1, 3, 6]]
RELEVANT = [{2, 4}, {5, 7, 8, 9}, set(), {10}]


def test_accuracy_metrics_by_hand():
    m = ranking_metrics(RECOMMENDED, RELEVANT, k=3)
    assert m["users"] == 3 and m["users_without_relevant"] == 1
    assert m["precision_at_k"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    # Normalised recall: a found 1 of min(3, 2) = 2; b found 1 of min(3, 4) = 3.
    assert m["recall_at_k"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    assert m["plain_recall_at_k"] == pytest.approx((1 / 2 + 1 / 4 + 0) / 3)
    ndcg_a = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    ndcg_b = 1 / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert m["ndcg_at_k"] == pytest.approx((ndcg_a + ndcg_b + 0) / 3)
    assert m["hit_rate_at_k"] == pytest.approx(2 / 3)
    assert m["recommendation_slots"] == 11  # the padding is not a slot
    json.dumps(m)


def test_distribution_metrics_by_hand():
    popularity = {item: 100 - item for item in range(1, 11)}  # 1 most popular, 10 least
    m = ranking_metrics(RECOMMENDED, RELEVANT, k=3, candidate_items=range(1, 11), item_popularity=popularity)
    # Shown: 1 ×2, 2, 3 ×2, 5, 6 ×2, 7, 8, 9 → 8 of 10 candidates.
    assert m["coverage"] == pytest.approx(0.8)
    assert (m["items_recommended"], m["candidate_items"]) == (8, 10)
    # Counts sorted: 0 0 1 1 1 1 1 2 2 2; Σ(2i − 11)·x = 37; G = 37 / (10 · 11).
    assert m["gini"] == pytest.approx(37 / 110)
    # Head = the 20 % most popular candidates = {1, 2}: 3 of the 11 slots; the tail has 8.
    assert m["long_tail_share"] == pytest.approx(8 / 11)
    json.dumps(m)


def test_recall_is_not_held_to_an_impossible_standard():
    # One relevant item found at rank 1 of 10: recall 1 (nothing better was possible), precision 0.1.
    m = ranking_metrics([list(range(10))], [{0}], k=10)
    assert (m["recall_at_k"], m["precision_at_k"], m["ndcg_at_k"]) == (1.0, 0.1, 1.0)
    # Twenty relevant items, all ten slots hit: normalised recall 1, plain recall 0.5.
    m = ranking_metrics([list(range(10))], [set(range(20))], k=10)
    assert (m["recall_at_k"], m["plain_recall_at_k"]) == (1.0, 0.5)


def test_arrays_strings_and_empty_inputs():
    ids = np.array([[3, 1, -1], [2, -1, -1]])
    m = ranking_metrics(ids, [np.array([1]), {9}], k=2)
    assert m["hit_rate_at_k"] == 0.5 and m["precision_at_k"] == pytest.approx(0.25)
    m = ranking_metrics([["x", "y"]], [{"y"}], k=2, candidate_items={"x", "y", "z", "w"})
    assert m["coverage"] == 0.5 and m["long_tail_share"] is None
    empty = ranking_metrics([], [], k=5, candidate_items={"x"})
    assert empty["recall_at_k"] is None and empty["coverage"] == 0.0 and empty["gini"] is None
    with pytest.raises(ValueError):
        ranking_metrics([[1]], [], k=5)
    with pytest.raises(ValueError):
        ranking_metrics([[1]], [{1}], k=0)


def test_gini_extremes():
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 7]) == pytest.approx(1 - 1 / 4)
    assert gini([]) is None and gini([0, 0]) is None
