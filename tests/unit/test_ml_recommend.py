"""ml.recommend: models, selection and serving on synthetic shops whose answers are planted.

The main shop has taste groups: every user belongs to one group and 85 % of their events are on
their group's items (the rest on five bestsellers or anything). A model that learns the groups
must beat popularity by far; popularity can only find the bestsellers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ml.recommend.candidates import MODELS, make_recommender, top_n
from ml.recommend.data import build_matrix, relevant_items, time_split
from ml.recommend.metrics import ranking_metrics
from ml.recommend.selection import select_recommender
from ml.recommend.serve import control_assignment, random_items, recommend_for_users

START = pd.Timestamp("2024-01-01")
AS_OF = START + pd.Timedelta(days=120)
WEIGHTS = {"view_item": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
STYLES = ["nordic", "rustic", "bohemian", "industrial", "coastal", "baroque", "zen", "retro"]
NOUNS = ["lamp", "chair", "sofa", "rug", "vase", "shelf", "desk", "mirror", "clock", "stool",
         "bench", "table", "cushion", "curtain", "basket", "frame", "candle", "plant", "bowl", "tray"]
# A few models cover the families; the full grid is exercised once.
SMALL_GRID = [("popularity", {}), ("item_cosine", {}), ("ease", {"l2": 500.0}), ("als", {"factors": 16})]


def shop(users=400, groups=8, per_group=20, days=120, bestsellers=5, events_per_user=25, seed=0):
    """Events over ``days`` from START and a catalogue; returns (interactions, items, group per user).

    Item ``g3_i07`` belongs to group 3; its text is "<style of group 3> <noun 7>", so the content
    model can find groups too. Event types: 70 % views, 15 % add to cart, 15 % purchases (outcome).
    """
    rng = np.random.default_rng(seed)
    group_of_user = rng.integers(0, groups, users)
    user = np.repeat(np.arange(users), rng.poisson(events_per_user, users) + 3)
    size = user.size
    kind = rng.random(size)
    own = group_of_user[user] * per_group + rng.integers(0, per_group, size)
    best = groups * per_group + rng.integers(0, bestsellers, size)
    anything = rng.integers(0, groups * per_group + bestsellers, size)
    item = np.where(kind < 0.85, own, np.where(kind < 0.95, best, anything))
    names = np.array(
        [f"g{g}_i{j:02d}" for g in range(groups) for j in range(per_group)]
        + [f"best{j}" for j in range(bestsellers)],
        dtype=object,
    )
    draw = rng.random(size)
    event_type = np.where(draw < 0.7, "view_item", np.where(draw < 0.85, "add_to_cart", "purchase"))
    user_ids = np.array([f"u{u:04d}" for u in range(users)], dtype=object)
    interactions = pd.DataFrame(
        {
            "user_id": user_ids[user],
            "item_id": names[item],
            "event_at": START + pd.to_timedelta(rng.random(size) * days, unit="D"),
            "event_type": event_type,
        }
    )
    interactions["weight"] = interactions["event_type"].map(WEIGHTS)
    interactions["is_outcome"] = interactions["event_type"] == "purchase"
    catalogue = [
        (names[g * per_group + j], f"{STYLES[g]} {NOUNS[j]}", f"{STYLES[g]} home", 10.0 + j, True,
         f"a {STYLES[g]} style {NOUNS[j]}")
        for g in range(groups)
        for j in range(per_group)
    ] + [(f"best{j}", f"gift card {j}", "gifts", 25.0, True, "gift card") for j in range(bestsellers)]
    items = pd.DataFrame(
        catalogue, columns=["item_id", "item_name", "category", "price", "is_in_stock", "description"]
    )
    return interactions, items, dict(zip(user_ids, group_of_user))


def group_of_item(item_id: str) -> int:
    return int(item_id[1 : item_id.index("_")]) if item_id.startswith("g") else -1


def event(user, item, day, event_type="purchase"):
    return {
        "user_id": user,
        "item_id": item,
        "event_at": START + pd.Timedelta(days=day),
        "event_type": event_type,
        "weight": WEIGHTS[event_type],
        "is_outcome": event_type == "purchase",
    }


@pytest.fixture(scope="module")
def planted():
    return shop()


@pytest.fixture(scope="module")
def holdout(planted):
    """Train before day 90, judged on purchases of days 90..120 (new items only)."""
    interactions, items, groups = planted
    split = time_split(interactions, START + pd.Timedelta(days=90), 30)
    train = build_matrix(split.train, reference_at=split.cutoff, item_ids=items["item_id"])
    relevant = relevant_items(split)
    users = [u for u in relevant if u in set(train.user_ids)]
    return train, relevant, users


@pytest.fixture(scope="module")
def selection(planted):
    interactions, items, _ = planted
    return select_recommender(interactions, items, as_of=AS_OF, seed=0)


# ---------------------------------------------------------------------------------------------
# Data


def test_matrix_sums_weights_with_sorted_index_maps():
    rows = [
        event("b", "x", 1, "view_item"),
        event("b", "x", 2, "purchase"),
        event("a", "y", 3, "add_to_cart"),
        event("a", "x", 4, "view_item"),
    ]
    frame = pd.DataFrame(rows)
    data = build_matrix(frame, item_ids=["z", "x"])
    assert list(data.user_ids) == ["a", "b"]
    assert list(data.item_ids) == ["x", "y", "z"]  # z: a catalogue item nobody touched
    assert data.matrix.toarray().tolist() == [[1.0, 3.0, 0.0], [6.0, 0.0, 0.0]]
    assert data.converted.toarray().tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert list(data.user_rows(["b", "nobody"])) == [1, -1]
    # Any row order gives the same matrix.
    shuffled = build_matrix(frame.iloc[::-1], item_ids=["x", "z"])
    assert (shuffled.matrix != data.matrix).nnz == 0


def test_time_decay_halves_a_weight_per_half_life():
    frame = pd.DataFrame([event("a", "x", 0, "view_item"), event("a", "y", 10, "view_item")])
    data = build_matrix(frame, reference_at=START + pd.Timedelta(days=10), half_life_days=10)
    # Only events strictly before reference_at count: the day-10 event is dropped.
    assert data.matrix.toarray().tolist() == [[pytest.approx(0.5)]]
    data = build_matrix(frame, reference_at=START + pd.Timedelta(days=20), half_life_days=10)
    assert data.matrix.toarray()[0].tolist() == [pytest.approx(0.25), pytest.approx(0.5)]


def test_time_split_and_relevant_items_keep_only_new_conversions():
    frame = pd.DataFrame(
        [
            event("a", "x", 1),  # bought before the cutoff …
            event("a", "x", 11),  # … so buying it again is not relevant
            event("a", "y", 12),
            event("a", "z", 13, "view_item"),  # a view is never relevant
            event("b", "y", 10),  # exactly at the cutoff: test
            event("b", "w", 20),  # at cutoff + test_days: outside
        ]
    )
    split = time_split(frame, START + pd.Timedelta(days=10), 10)
    assert split.train["event_at"].max() < split.cutoff
    assert len(split.test) == 3 and split.test["is_outcome"].all()  # no view, nothing from day 20
    assert relevant_items(split) == {"a": ["y"], "b": ["y"]}
    assert relevant_items(split, new_items_only=False) == {"a": ["x", "y"], "b": ["y"]}


# ---------------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize("name", ["ease", "als", "item_cosine", "item_bm25"])
def test_collaborative_models_recover_the_taste_groups(name, planted, holdout):
    _, items, groups = planted
    train, relevant, users = holdout
    rows = train.user_rows(users)
    truth = [set(relevant[u]) for u in users]

    def judge(model_name, **params):
        model = make_recommender(model_name, **params).fit(train, items, seed=0)
        ids, _ = model.recommend(rows, n=10, exclude=train.converted[rows])
        recommended = [[train.item_ids[i] for i in row if i >= 0] for row in ids]
        return recommended, ranking_metrics(recommended, truth, k=10)

    recommended, metrics = judge(name, **({"factors": 16} if name == "als" else {}))
    _, baseline = judge("popularity")
    assert metrics["recall_at_k"] > 0.3
    assert metrics["recall_at_k"] > 2.5 * baseline["recall_at_k"]
    # The lists are the user's group: at least 8 of 10 items, on average.
    purity = np.mean([np.mean([group_of_item(i) == groups[u] for i in items_]) for u, items_ in zip(users, recommended)])
    assert purity > 0.8


def catalogue_with_a_new_boot():
    """A tiny shop: shoes, shirts and garden tools; one boot is new (in the catalogue, no events)."""
    items = pd.DataFrame(
        {
            "item_id": ["ankle_boot", "knee_boot", "tshirt", "polo", "hose", "rake", "sneaker"],
            "item_name": ["red leather ankle boot", "red leather knee boot", "blue cotton t-shirt",
                          "white cotton polo shirt", "green garden hose", "steel garden rake",
                          "white canvas sneaker"],
            "category": ["shoes", "shoes", "shirts", "shirts", "garden", "garden", "shoes"],
            "price": [80.0, 120.0, 15.0, 25.0, 30.0, 20.0, 60.0],
            "is_in_stock": [True] * 7,
            "description": ["boot in red leather", "tall boot in red leather", "cotton tee", "polo",
                            "hose for the garden", "rake for leaves", "canvas sneaker"],
        }
    )
    rows = [event(f"s{i}", item, i % 20 + 1, kind) for i in range(30)
            for item, kind in (("tshirt", "purchase"), ("polo", "view_item"), ("hose", "purchase"))]
    rows += [event("fan", "ankle_boot", 25, "view_item"), event("x", "sneaker", 3), event("x", "rake", 4)]
    return pd.DataFrame(rows), items


def test_content_model_recommends_a_never_bought_item_similar_to_one_view():
    interactions, items = catalogue_with_a_new_boot()
    data = build_matrix(interactions, item_ids=items["item_id"])
    row = data.user_rows(["fan"])
    content = make_recommender("content").fit(data, items, seed=0)
    ids, scores = content.recommend(row, n=3)
    top = [data.item_ids[i] for i in ids[0]]
    assert top[:2] == ["ankle_boot", "knee_boot"]  # the viewed boot, then its never-bought twin
    assert scores[0, 1] > scores[0, 2] > 0
    # The collaborative models cannot know it …
    ease = make_recommender("ease").fit(data, items, seed=0)
    assert "knee_boot" not in [data.item_ids[i] for i in ease.recommend(row, n=6)[0][0] if i >= 0]
    # … the hybrid blends the content in and can.
    hybrid = make_recommender("hybrid").fit(data, items, seed=0)
    assert "knee_boot" in [data.item_ids[i] for i in hybrid.recommend(row, n=3)[0][0]]


def test_popularity_counts_the_last_30_days_and_trending_the_growth_before_the_offset():
    counter = iter(range(10_000))

    def sales(item, day, count):
        return [event(f"p{next(counter)}", item, day) for _ in range(count)]

    # Reference day 100; trending compares [91, 98) with [84, 91) (7-day windows, 2-day offset).
    rows = sales("old_hit", 5, 50)  # a hit long ago: outside every window
    rows += sales("riser", 88, 1) + sales("riser", 94, 8)  # 1 → 8
    rows += sales("steady", 88, 10) + sales("steady", 94, 10)  # 10 → 10
    rows += sales("faller", 88, 10) + sales("faller", 94, 2)  # 10 → 2
    rows += sales("fresh_burst", 99, 40)  # inside the offset: too fresh to trust
    data = build_matrix(pd.DataFrame(rows), reference_at=START + pd.Timedelta(days=100))

    popular = make_recommender("popularity").fit(data, None, seed=0)
    ids, scores = popular.recommend([0], n=5)
    assert [data.item_ids[i] for i in ids[0]] == ["fresh_burst", "steady", "faller", "riser", "old_hit"]
    assert scores[0].tolist() == [40.0, 20.0, 12.0, 9.0, 0.0]

    trending = make_recommender("trending").fit(data, None, seed=0)
    ids, scores = trending.recommend([0], n=5)
    # Growth (current + 5) / (previous + 5); items without sales in the window follow by popularity.
    assert [data.item_ids[i] for i in ids[0]] == ["riser", "steady", "faller", "fresh_burst", "old_hit"]
    assert scores[0, :3].tolist() == pytest.approx([13 / 6, 1.0, 7 / 15])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_honours_exclusions_and_pads(name, planted):
    interactions, items, _ = planted
    data = build_matrix(interactions.iloc[:3000], item_ids=items["item_id"])
    model = make_recommender(name, **({"iterations": 5} if name == "bpr" else {})).fit(data, items, seed=0)
    rows = np.arange(min(50, data.n_users))
    allowed = np.zeros(data.n_items, dtype=bool)
    allowed[::3] = True
    exclude = data.converted[rows]
    ids, scores = model.recommend(rows, n=10, exclude=exclude, allowed=allowed)
    assert ids.shape == scores.shape == (rows.size, 10)
    for r in range(rows.size):
        got = ids[r][ids[r] >= 0]
        assert len(set(got)) == got.size
        assert allowed[got].all()
        assert not set(got) & set(exclude[r].indices)
        assert np.isnan(scores[r][ids[r] < 0]).all() and np.isfinite(scores[r][ids[r] >= 0]).all()
    # Only 2 allowed items: everybody gets at most 2, the rest is padding.
    two = np.zeros(data.n_items, dtype=bool)
    two[[0, 1]] = True
    ids, _ = model.recommend(rows, n=5, allowed=two)
    assert set(ids[:, 2:].ravel()) == {-1} and set(ids[:, :2].ravel()) <= {0, 1, -1}


def test_top_n_breaks_ties_by_column_and_never_returns_excluded():
    scores = np.array([[1.0, 3.0, 3.0, -np.inf, 2.0]], dtype=np.float32)
    ids, values = top_n(scores.copy(), 4, sp.csr_matrix(np.array([[0, 0, 1, 0, 0]])))
    assert ids.tolist() == [[1, 4, 0, -1]]
    assert values[0, :3].tolist() == [3.0, 2.0, 1.0] and np.isnan(values[0, 3])


@pytest.mark.parametrize("name", ["als", "bpr", "ease", "item_bm25", "content"])
def test_same_seed_same_recommendations_whatever_the_row_order(name, planted):
    interactions, items, _ = planted
    params = {"factors": 16, "iterations": 20} if name == "bpr" else {"factors": 16} if name == "als" else {}

    def run(frame):
        data = build_matrix(frame, item_ids=items["item_id"])
        model = make_recommender(name, **params).fit(data, items, seed=7)
        return model.recommend(np.arange(data.n_users), n=10, exclude=data.converted)

    first, again = run(interactions), run(interactions.sample(frac=1.0, random_state=1))
    assert np.array_equal(first[0], again[0])
    assert np.allclose(first[1], again[1], equal_nan=True)


# ---------------------------------------------------------------------------------------------
# Selection


def test_selection_picks_a_personalised_model_and_says_why(selection):
    table = selection.metrics_table()
    assert table["label"].iloc[0] == "popularity"
    assert {"item_cosine", "ease(λ=500)", "als(factors=32)", "content", "bpr(iterations=50)"} <= set(table["label"])
    assert selection.winner != "popularity"
    winner = table[table["is_winner"]].iloc[0]
    baseline = table[table["label"] == "popularity"].iloc[0]
    assert winner["recall_at_k"] == table.loc[table["meets_coverage"], "recall_at_k"].max()
    assert winner["recall_at_k"] > 2.5 * baseline["recall_at_k"] and winner["coverage"] >= 0.25
    ratio = winner["recall_at_k"] / baseline["recall_at_k"]
    assert selection.reason.startswith(
        f"{selection.label}: recall@10 {winner['recall_at_k']:.2f} = {ratio:.1f}× popularity, coverage "
    )
    assert selection.reason.endswith("≥ 25 %")
    assert selection.skipped == []
    # Refitted on everything before as_of: the holdout month is in the served model.
    assert selection.model.data.reference_at == AS_OF
    assert selection.model.data.events["event_at"].max() > pd.Timestamp(selection.summary["cutoff"])
    assert selection.model.label == selection.label
    json.dumps(selection.candidates)
    json.dumps(selection.summary)
    json.dumps(selection.skipped)


def test_selection_never_reads_events_after_as_of(planted):
    interactions, items, _ = planted
    as_of = START + pd.Timedelta(days=100)
    # After as_of: everybody buys one gift card over and over, and a new item appears.
    later = pd.DataFrame(
        [event(u, "best0", 100 + d % 20) for u in sorted(set(interactions["user_id"]))[:200] for d in range(5)]
        + [event("u0001", "brand_new", 101), event("u0001", "g1_i01", 100)]
    )
    before = interactions[interactions["event_at"] < as_of]

    def run(frame):
        chosen = select_recommender(frame, items, as_of=as_of, grid=SMALL_GRID, seed=0)
        served = recommend_for_users(chosen, ["u0001", "u0002", "newcomer"], n=5, control_share=0.3)
        table = chosen.metrics_table().drop(columns=["fit_seconds", "recommend_seconds"])
        return chosen, table, served

    base, base_table, base_served = run(before)
    more, more_table, more_served = run(pd.concat([interactions, later], ignore_index=True))
    assert (more.winner, more.params, more.reason) == (base.winner, base.params, base.reason)
    pd.testing.assert_frame_equal(more_table, base_table)
    pd.testing.assert_frame_equal(more_served, base_served)
    assert more.summary == base.summary
    assert "brand_new" not in set(more.model.data.item_ids)


def test_a_tiny_time_budget_stops_the_grid_and_says_so(planted):
    interactions, items, _ = planted
    chosen = select_recommender(interactions, items, as_of=AS_OF, time_budget_seconds=0, seed=0)
    assert [row["label"] for row in chosen.candidates] == ["popularity"]  # the baseline always runs
    assert len(chosen.skipped) == 12
    assert {row["cause"] for row in chosen.skipped} == {"budget"}
    assert chosen.skipped[0]["reason"] == "time budget of 0 s spent"
    assert chosen.winner == "popularity"
    assert "no candidate reached coverage 25 %" in chosen.reason
    assert chosen.reason.endswith("skipped 12 for the 0 s time budget")


def test_without_item_text_content_models_are_skipped_with_a_reason(planted):
    interactions, _, _ = planted
    grid = [("popularity", {}), ("content", {}), ("hybrid", {}), ("ease", {})]
    chosen = select_recommender(interactions, None, as_of=AS_OF, grid=grid, seed=0)
    assert [row["label"] for row in chosen.skipped] == ["content", "hybrid"]
    assert {row["cause"] for row in chosen.skipped} == {"text"}
    assert chosen.winner == "ease"
    assert chosen.reason.endswith("skipped 2 for lack of item text")


def test_when_no_candidate_reaches_the_coverage_the_widest_wins(planted):
    interactions, items, _ = planted
    grid = [("popularity", {}), ("trending", {}), ("popularity", {"window_days": 120})]
    chosen = select_recommender(interactions, items, as_of=AS_OF, grid=grid, min_coverage=0.5, seed=0)
    best = max(chosen.candidates, key=lambda row: row["coverage"])
    assert chosen.label == best["label"]
    assert chosen.reason.startswith("no candidate reached coverage 50 %; ")


# ---------------------------------------------------------------------------------------------
# Serving


@pytest.fixture(scope="module")
def served_users(planted):
    interactions, _, _ = planted
    return sorted(set(interactions["user_id"])) + [f"new{i}" for i in range(100)]


def test_serving_output_shape_and_sources(selection, served_users):
    out = recommend_for_users(selection, served_users, n=10, control_share=0.2, seed=3)
    assert list(out.columns) == ["user_id", "rank", "item_id", "score", "is_control", "source"]
    assert out.groupby("user_id")["rank"].apply(list).map(lambda r: r == list(range(1, 11))).all()
    assert list(pd.unique(out["user_id"])) == served_users  # the caller's order
    source = out.groupby("user_id")["source"].first()
    known = [u for u in served_users if not u.startswith("new")]
    in_control = dict(zip(served_users, control_assignment(served_users, 0.2, 3)))
    assert set(source[[u for u in known if not in_control[u]]]) == {selection.winner}
    assert set(source[[u for u in served_users if u.startswith("new") and not in_control[u]]]) == {"fallback_trending"}
    assert set(source[[u for u in served_users if in_control[u]]]) == {"control_random"}
    assert out.loc[out["is_control"], "score"].isna().all()
    assert out.loc[~out["is_control"], "score"].notna().all()
    empty = recommend_for_users(selection, [], n=10)
    assert empty.empty and list(empty.columns) == list(out.columns)


def test_exclusions_hold_for_model_fallback_and_control_users(selection, planted, served_users):
    interactions, items, _ = planted
    stock = items.copy()
    stock.loc[stock["item_id"].isin(["g1_i01", "g2_i02", "best1"]), "is_in_stock"] = False
    listed = ["best0", "g3_i03", "g0_i00"]
    out = recommend_for_users(
        selection, served_users, n=10, exclude_items=listed, in_stock_only=True, items=stock,
        control_share=0.3, seed=1,
    )
    assert set(out["source"]) == {selection.winner, "fallback_trending", "control_random"}
    assert not set(out["item_id"]) & {*listed, "g1_i01", "g2_i02", "best1"}
    bought = interactions[interactions["is_outcome"] & (interactions["event_at"] < AS_OF)]
    shown = out[["user_id", "item_id"]].merge(bought[["user_id", "item_id"]].drop_duplicates())
    assert shown.empty
    # Candidate items restrict everyone too.
    few = ["g0_i05", "g1_i05", "best2", "best3"]
    out = recommend_for_users(selection, served_users, n=10, candidate_items=few, control_share=0.3)
    assert set(out["item_id"]) <= set(few)
    # Switching off exclude_converted brings bought items back for somebody.
    out = recommend_for_users(selection, served_users, n=10, exclude_converted=False)
    assert not out[["user_id", "item_id"]].merge(bought[["user_id", "item_id"]].drop_duplicates()).empty


def test_control_group_is_a_stable_hash_share_with_random_items(selection, served_users):
    users = [f"c{i}" for i in range(4000)]
    share = control_assignment(users, 0.2, seed=5).mean()
    assert share == pytest.approx(0.2, abs=0.02)
    assert not control_assignment(users, 0.0, seed=5).any() and control_assignment(users, 1.0, seed=5).all()

    out = recommend_for_users(selection, served_users, n=10, control_share=0.25, seed=5)
    control = out[out["is_control"]]
    assert (out["is_control"] == (out["source"] == "control_random")).all()
    assert control["user_id"].nunique() / len(served_users) == pytest.approx(0.25, abs=0.06)
    # Random, not the model's lists: many distinct items, many groups per user.
    assert control["item_id"].nunique() > 100
    groups_per_user = control.assign(group=control["item_id"].map(group_of_item)).groupby("user_id")["group"].nunique()
    assert groups_per_user.mean() > 4
    # A user's control list does not depend on who else is served.
    one = control["user_id"].iloc[0]
    alone = recommend_for_users(selection, [one], n=10, control_share=0.25, seed=5)
    assert alone["item_id"].tolist() == control.loc[control["user_id"] == one, "item_id"].tolist()
    # Another seed reshuffles the group.
    assert not np.array_equal(control_assignment(users, 0.2, 5), control_assignment(users, 0.2, 6))


def test_random_items_are_uniform_distinct_and_respect_exclusions():
    item_ids = np.array([f"i{j:03d}" for j in range(200)], dtype=object)
    users = [f"c{i}" for i in range(3000)]
    ids = random_items(users, item_ids, 10, seed=0)
    assert all(len(set(row)) == 10 for row in ids)
    counts = np.bincount(ids.ravel(), minlength=200)
    assert counts.min() > 100 and counts.max() < 200  # 150 expected per item
    # Nearly everything excluded: the exact shuffle takes over and finds the 10 left.
    blocked = np.ones((2, 200), dtype=np.float32)
    blocked[0, 50:60] = 0
    ids = random_items(["a", "b"], item_ids, 10, seed=0, exclude=sp.csr_matrix(blocked))
    assert sorted(ids[0]) == list(range(50, 60)) and set(ids[1]) == {-1}
    # A catalogue smaller than n: all of it, then padding.
    allowed = np.zeros(200, dtype=bool)
    allowed[[3, 7, 9]] = True
    ids = random_items(["a"], item_ids, 5, seed=0, allowed=allowed)
    assert sorted(ids[0][:3]) == [3, 7, 9] and list(ids[0][3:]) == [-1, -1]


def test_same_seed_identical_output(selection, served_users):
    kwargs = dict(n=10, control_share=0.2, seed=11, fallback="popular")
    first = recommend_for_users(selection, served_users, **kwargs)
    again = recommend_for_users(selection.model, list(reversed(served_users)), **kwargs)
    again = again.set_index("user_id").loc[pd.unique(first["user_id"])].reset_index()
    pd.testing.assert_frame_equal(first, again)
    assert "fallback_popular" in set(first["source"])


def test_min_history_sends_thin_histories_to_the_fallback(selection):
    data = selection.model.data
    sizes = dict(zip(data.user_ids, data.history_sizes()))
    thin = [u for u, s in sizes.items() if s < 15][:5]
    rich = [u for u, s in sizes.items() if s >= 15][:5]
    out = recommend_for_users(selection, thin + rich, n=3, min_history=15)
    source = out.groupby("user_id")["source"].first()
    assert set(source[thin]) == {"fallback_trending"} and set(source[rich]) == {selection.winner}


def test_the_library_imports_neither_dagster_nor_duckdb_and_loads_implicit_lazily():
    code = (
        "import sys, ml.recommend; assert 'implicit' not in sys.modules and 'sklearn' not in sys.modules;"
        "import ml.recommend.selection, ml.recommend.serve;"
        "assert not {'dagster', 'duckdb', 'dbt'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
