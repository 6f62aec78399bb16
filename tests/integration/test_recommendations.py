"""A recommendation's life on generated data: choose, recommend, honour exclusions, judge against control.

One warehouse of generated events (3,000 users, 100 days) is built by dbt as of PAST and later as of
AS_OF (10 days on), and ``ml.recommendations.run_recommendation`` runs on it the way the Dagster
asset does, with the project's own ``products_for_you`` declaration. The behaviours of the models
themselves (planted tastes, the content model, seeds) are tested on synthetic data in
tests/unit/test_ml_recommend.py; the Dagster ordering in test_pipeline.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from generated_warehouse import load_generated
from test_dbt_project import run_dbt

from cohortflow.dbt_manifest import ensure_manifest
from cohortflow.declarations import RecommendationDeclaration, load_project_recommendations
from ml import tables
from ml.recommendations import RecommendationRunError, run_recommendation

pytestmark = pytest.mark.slow  # two dbt builds and three selections on 3,000 users, ~40 s

END = datetime(2026, 11, 1)
AS_OF = END
PAST = AS_OF - timedelta(days=10)
NOW = datetime(2026, 11, 2, 9, 0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("recommendations")
    path = root / "cohortflow.duckdb"
    load_generated(path, root / "data", users=3000, days=100, seed=13, end=END)
    manifest = json.loads(ensure_manifest().read_text())
    declaration = {r.name: r for r in load_project_recommendations(manifest)}["products_for_you"]
    return {"root": root, "warehouse": path, "declaration": declaration}


def build(world: dict[str, Any], as_of: datetime, select: str = "+recommendation_events +recommendation_items") -> None:
    args = ["build", "--select", *select.split(), "--vars", json.dumps({"as_of": as_of.isoformat()})]
    result = run_dbt(args, world["warehouse"], world["root"] / f"dbt-{as_of:%m%d%H}")
    assert result.returncode == 0, result.stdout[-4000:]


def run(world: dict[str, Any], as_of: datetime, declaration: RecommendationDeclaration | None = None):
    con = duckdb.connect(str(world["warehouse"]))
    try:
        return run_recommendation(con, declaration or world["declaration"], as_of=as_of, now=NOW)
    finally:
        con.close()


def query(world: dict[str, Any], sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(world["warehouse"]), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def lists(world: dict[str, Any], as_of: datetime) -> list[tuple]:
    return query(world, "select user_id, rank, item_id, score, is_control, source, model_version "
                        "from recommendations.products_for_you where as_of = ? order by user_id, rank", [as_of])


def test_a_run_beats_popularity_and_serves_every_active_user(world: dict[str, Any]) -> None:
    build(world, PAST)
    first = run(world, PAST)
    assert first.winner != "popularity" and first.metrics["recall_vs_popularity"] > 1.5, first.reason
    assert first.metrics["coverage"] >= world["declaration"].spec.min_coverage or "coverage" in first.reason
    assert {c["name"] for c in first.candidates} >= {"popularity", "ease", "als", "item_cosine"}

    rows = lists(world, PAST)
    active = {r[0] for r in query(world, "select distinct user_id from marts.recommendation_events "
                                         "where event_at > ? and event_at <= ?", [PAST - timedelta(days=90), PAST])}
    served = {r[0] for r in rows}
    assert served == active and first.users_served == len(active)
    per_user: dict[str, list[tuple]] = {}
    for row in rows:
        per_user.setdefault(row[0], []).append(row)
    assert all([r[1] for r in user_rows] == list(range(1, 11)) for user_rows in per_user.values())

    # The control group: ~10 % of users, random items, flagged; everyone else the model or the fallback.
    control = {u for u, user_rows in per_user.items() if user_rows[0][4]}
    assert 0.06 < len(control) / len(served) < 0.14
    assert {r[5] for r in rows if r[4]} == {"control_random"}
    assert {r[5] for r in rows if not r[4]} <= {first.winner, "fallback_trending"}

    (model,) = query(world, f"select model_name, recall_at_10, coverage, candidates from {tables.RECOMMENDATION_MODELS_TABLE}")
    assert model[0] == first.winner and model[1] == pytest.approx(first.metrics["recall_at_k"])
    assert len(json.loads(model[3])) == len(first.candidates)


def test_exclusions_hold_for_every_list(world: dict[str, Any]) -> None:
    rows = lists(world, PAST)
    bought = set(query(world, "select user_id, item_id from marts.recommendation_events "
                              "where event_type = 'purchase' and event_at <= ?", [PAST]))
    out_of_stock = {r[0] for r in query(world, "select item_id from marts.recommendation_items where not is_in_stock")}
    assert out_of_stock  # the generator marks some items out of stock
    assert not [r for r in rows if (r[0], r[2]) in bought]
    assert not [r for r in rows if r[2] in out_of_stock]
    assert len({(r[0], r[2]) for r in rows}) == len(rows)  # no item twice in a list


def test_the_same_as_of_gives_the_same_lists(world: dict[str, Any]) -> None:
    before = lists(world, PAST)
    run(world, PAST)
    assert lists(world, PAST) == before  # seeded: identical, and the as_of's rows replaced, not appended


def test_later_runs_judge_earlier_lists_against_control(world: dict[str, Any]) -> None:
    build(world, AS_OF)
    later = run(world, AS_OF)
    (performance,) = later.performance
    assert performance["scored_as_of"] == PAST and performance["window_complete"]  # 7 days had passed
    assert performance["treatment_exposed"] > performance["control_exposed"] > 0
    assert performance["treatment_rate"] is not None and performance["control_rate"] is not None
    assert performance["p_value"] is None or 0 <= performance["p_value"] <= 1
    stored = query(world, f"select scored_as_of, treatment_exposed, control_exposed, lift from {tables.RECOMMENDATION_PERFORMANCE_TABLE}")
    assert stored == [(PAST, performance["treatment_exposed"], performance["control_exposed"], performance["lift"])]
    # Both runs kept; dbt serves, for each as_of, the latest run at or before it.
    for moment, served in ((PAST + timedelta(days=2), PAST), (AS_OF, AS_OF)):
        build(world, moment, select="recommendations user_recommendations")
        assert query(world, "select distinct as_of from marts.recommendations") == [(served,)]
        top5 = dict(query(world, "select user_id, products_for_you_top5 from marts.user_recommendations"))
        first_user = sorted(top5)[0]
        expected = [r[2] for r in lists(world, served) if r[0] == first_user][:5]
        assert top5[first_user].split(",") == expected


def test_a_recommendation_without_its_outcome_event_fails_naming_why(world: dict[str, Any]) -> None:
    spec = world["declaration"].spec.model_dump(by_alias=True)
    spec["outcome"] = "cancel_subscription"  # no item on those events
    broken = world["declaration"].model_copy(update={"spec": type(world["declaration"].spec).model_validate(spec)})
    with pytest.raises(RecommendationRunError, match="no 'cancel_subscription' event with an item"):
        run(world, AS_OF, broken)
