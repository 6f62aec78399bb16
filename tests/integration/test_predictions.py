"""A prediction's life on generated data: train, calibrate, score, guard, backfill, judge afterwards.

One warehouse of generated events (3,000 users, 100 days) is built by dbt as of PAST and later as of
AS_OF (14 days on), and ``ml.predictions.run_prediction`` runs on it the way the Dagster asset does,
with the project's own ``purchase_7d`` declaration (and variations of it). The Dagster graph itself
(dbt → prediction → predictive cohorts → syncs, in that order) is tested in test_pipeline.py.

The tests of this module run in order and share the warehouse: each step is what an operator would
see next (first model, scoring only, a guardrail, a worse model, two weeks later, a backfill).
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
from cohortflow.declarations import PredictionDeclaration, load_project_predictions
from ml import tables
from ml.examples import ExamplesError
from ml.predictions import PredictionRunError, degradation, model_in_service, run_prediction
from ml.store import ModelStore

pytestmark = pytest.mark.slow  # two dbt builds of 3,000 users x 100 days and five trainings, ~60 s

END = datetime(2026, 11, 1)
AS_OF = END  # midnight: the features' training cutoffs are AS_OF - 7 k days
PAST = AS_OF - timedelta(days=14)
NOW = datetime(2026, 11, 2, 9, 0)  # the wall clock the runs pretend (scored_at, trained_at)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("predictions")
    path = root / "cohortflow.duckdb"
    load_generated(path, root / "data", users=3000, days=100, seed=11, end=END)
    manifest = json.loads(ensure_manifest().read_text())
    declaration = {p.name: p for p in load_project_predictions(manifest)}["purchase_7d"]
    return {"root": root, "warehouse": path, "declaration": declaration, "store": ModelStore(root / "models")}


def build(world: dict[str, Any], as_of: datetime, select: str = "+prediction_features +prediction_outcomes +active_last_90_days") -> None:
    args = ["build", "--select", *select.split(), "--vars", json.dumps({"as_of": as_of.isoformat()})]
    result = run_dbt(args, world["warehouse"], world["root"] / f"dbt-{as_of:%m%d}")
    assert result.returncode == 0, result.stdout[-4000:]


def run(world: dict[str, Any], as_of: datetime, declaration: PredictionDeclaration | None = None, **kwargs: Any):
    con = duckdb.connect(str(world["warehouse"]))
    try:
        return run_prediction(con, declaration or world["declaration"], as_of=as_of, store=world["store"], now=NOW, **kwargs)
    finally:
        con.close()


def query(world: dict[str, Any], sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(world["warehouse"]), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def variant(declaration: PredictionDeclaration, **changes: Any) -> PredictionDeclaration:
    """The declaration with some keys of its meta.prediction changed, checked like a declared one."""
    spec = type(declaration.spec).model_validate({**declaration.spec.model_dump(), **changes})
    return declaration.model_copy(update={"spec": spec})


def scores(world: dict[str, Any], as_of: datetime) -> dict[str, tuple[float, int, str]]:
    rows = query(world, "select user_id, probability, percentile, model_version from predictions.purchase_7d where as_of = ?", [as_of])
    return {user: (p, pct, version) for user, p, pct, version in rows}


def test_first_run_trains_calibrates_and_scores_the_starting_cohort(world: dict[str, Any]) -> None:
    build(world, PAST)
    first = run(world, PAST)
    assert first.retrained and first.promoted and first.reason == "first model"
    assert first.model_name in ("logistic", "gradient_boosting")

    # Trained only on cutoffs whose 7-day horizon had passed by PAST, validated on the latest of them.
    summary = first.summary
    used = [datetime.fromisoformat(c) for split in ("fit", "calibration", "validation") for c in summary["cutoffs"][split]]
    assert max(used) + timedelta(days=7) <= PAST
    assert min(datetime.fromisoformat(c) for c in summary["cutoffs"]["validation"]) > max(
        datetime.fromisoformat(c) for c in summary["cutoffs"]["fit"]
    )

    # Honest numbers on validation: ranks well, and "0.3" means about three in ten.
    m = first.metrics
    assert m["auc"] > 0.75, m
    assert m["calibration_error"] < 0.03, m
    assert abs(m["mean_probability"] - m["base_rate"]) < 0.03, m
    assert set(first.candidates) == {"logistic", "gradient_boosting"}
    assert first.importance and all(i["sentence"] for i in first.importance)

    # Every user active in the 90 days before PAST is scored, once, with a percentile among them.
    expected = {
        r[0]
        for r in query(
            world,
            "select user_id from marts.prediction_features where is_scoring_cutoff and days_since_last_event <= 90",
        )
    }
    scored = scores(world, PAST)
    assert set(scored) == expected and first.scored_users == len(expected)
    assert all(0 < p < 1 and 0 <= pct <= 99 and v == first.model_version for p, pct, v in scored.values())
    by_probability = sorted(scored.values())
    assert all(a[1] <= b[1] for a, b in zip(by_probability, by_probability[1:]))  # percentile follows probability

    # The model row and its skops artefact (not a pickle), loadable with only trusted types.
    (row,) = query(world, f"select status, as_of, auc, artefact from {tables.MODELS_TABLE}")
    assert row[0] == "in_service" and row[1] == PAST and row[2] == pytest.approx(m["auc"])
    artefact = Path(row[3])
    assert artefact.suffix == ".skops" and artefact.is_file() and artefact.read_bytes()[:2] == b"PK"
    world["store"].load("purchase_7d", first.model_version)


def test_a_second_run_only_scores_and_gives_the_same_scores(world: dict[str, Any]) -> None:
    before = scores(world, PAST)
    again = run(world, PAST)
    assert not again.retrained and "retraining not due" in again.reason
    assert scores(world, PAST) == before  # same model, same features: the same numbers, not appended twice
    assert query(world, "select count(*) from predictions.purchase_7d") == [(len(before),)]


def test_too_few_examples_fail_the_run_and_keep_the_last_scores(world: dict[str, Any]) -> None:
    before = scores(world, PAST)
    models = query(world, f"select count(*) from {tables.MODELS_TABLE}")
    strict = variant(world["declaration"], min_class_examples=5_000)
    with pytest.raises(PredictionRunError, match=r"needs at least 5,000 positive and 5,000 negative examples") as error:
        run(world, PAST, strict, retrain=True)
    assert "the last good scores stay in place" in str(error.value)
    assert "_predictions__sources.yml" in str(error.value)  # where to switch it off
    assert scores(world, PAST) == before
    assert query(world, f"select count(*) from {tables.MODELS_TABLE}") == models


def test_a_worse_model_is_trained_but_not_promoted(world: dict[str, Any]) -> None:
    in_service = scores(world, PAST)
    weak = variant(world["declaration"], features={"include": ["tenure_days"], "exclude": []})
    attempt = run(world, PAST, weak, retrain=True)
    assert attempt.retrained and not attempt.promoted
    assert attempt.reason.startswith("not promoted: validation log loss")
    statuses = dict(query(world, f"select status, count(*) from {tables.MODELS_TABLE} group by status"))
    assert statuses == {"in_service": 1, "not_promoted": 1}
    # The scores of this run come from the model in service, unchanged.
    assert scores(world, PAST) == in_service


def test_two_weeks_later_it_retrains_and_judges_the_old_scores(world: dict[str, Any]) -> None:
    build(world, AS_OF)
    later = run(world, AS_OF)
    assert later.retrained  # the model in service is 14 days old: a weekly retraining is due
    assert later.reason.startswith(("promoted", "not promoted"))
    # PAST's scores had their 7 days: predicted against realised, overall and by decile.
    (realised,) = later.realised
    assert realised["scored_as_of"] == PAST and realised["users"] == len(scores(world, PAST))
    assert abs(realised["mean_probability"] - realised["realised_rate"]) < 0.05, realised
    assert realised["auc"] > 0.7
    deciles = query(world, f"select decile, users, mean_probability, realised_rate from {tables.REALISED_DECILES_TABLE} order by decile")
    assert [d[0] for d in deciles] == list(range(1, 11))
    assert deciles[-1][3] > 2 * deciles[0][3]  # the top decile converts far more than the bottom one
    check = degradation(duckdb.connect(str(world["warehouse"]), read_only=True), "purchase_7d")
    assert check is not None and check["scored_as_of"] == PAST and check["degraded"] is False
    # Both runs are kept, each under its own as_of.
    assert {r[0] for r in query(world, "select distinct as_of from predictions.purchase_7d")} == {PAST, AS_OF}


def test_a_backfill_uses_no_model_trained_later(world: dict[str, Any]) -> None:
    con = duckdb.connect(str(world["warehouse"]), read_only=True)
    try:
        assert model_in_service(con, "purchase_7d", PAST).as_of == PAST
        assert model_in_service(con, "purchase_7d", PAST - timedelta(days=1)) is None
    finally:
        con.close()
    # Features are built as of AS_OF now: a run as of PAST is refused rather than mixing moments.
    with pytest.raises(ExamplesError, match="was built as of 2026-11-01 00:00:00, not 2026-10-18 00:00:00"):
        run(world, PAST)
    # Rebuilt as of PAST, it scores with PAST's model, not the newer one, and leaves AS_OF's scores alone.
    served_now = scores(world, AS_OF)
    build(world, PAST)
    backfill = run(world, PAST, retrain=False)
    con = duckdb.connect(str(world["warehouse"]), read_only=True)
    try:
        past_model = model_in_service(con, "purchase_7d", PAST).model_version
    finally:
        con.close()
    assert backfill.model_version == past_model
    assert {v for _, _, v in scores(world, PAST).values()} == {past_model}
    assert scores(world, AS_OF) == served_now


def test_dbt_serves_the_latest_scores_at_or_before_its_own_as_of(world: dict[str, Any]) -> None:
    for moment, served in ((PAST + timedelta(days=3), PAST), (AS_OF, AS_OF)):
        build(world, moment, select="predictions likely_buyers_7d")
        rows = query(world, "select distinct as_of from marts.predictions where prediction_id = 'purchase_7d'")
        assert rows == [(served,)]
        top = {r[0] for r in query(world, "select user_id from predictions.purchase_7d where as_of = ? and percentile >= 90", [served])}
        assert {r[0] for r in query(world, "select user_id from cohorts.likely_buyers_7d")} == top
        assert {r[0] for r in query(world, "select distinct entered_at from cohorts.likely_buyers_7d")} == {served}
