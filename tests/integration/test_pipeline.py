"""The whole Dagster graph, materialised in process on generated data in a temporary warehouse."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from generated_warehouse import load_generated

from cohortflow import warehouse
from cohortflow.dbt_manifest import ensure_manifest
from cohortflow.demo import run_webhook_syncs
from cohortflow.pipeline import PipelineError, run_pipeline
from reverse_etl.emulators.webhook import WebhookEmulator

pytestmark = pytest.mark.slow

END = datetime(2026, 11, 1)


def load_sample(path: Path, data_dir: Path, *, users: int = 400, days: int = 45) -> datetime:
    return load_generated(path, data_dir, users=users, days=days, seed=7, end=END)


def declared_cohort_ids() -> set[str]:
    manifest = json.loads(ensure_manifest().read_text())
    return {
        node["config"]["meta"]["cohort_id"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["fqn"][1] == "cohorts"
    }


def members(path: Path, relation: str) -> set[str]:
    con = warehouse.connect(path, read_only=True)
    try:
        return {row[0] for row in con.execute(f"select user_id from {relation}").fetchall()}
    finally:
        con.close()


def materialisation_order(run_id: str, *keys: list[str]) -> bool:
    """True when the run materialised ``keys`` in this order (each one's first materialisation)."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    first_seen: dict[tuple[str, ...], int] = {}
    for position, record in enumerate(records):
        first_seen.setdefault(tuple(record.dagster_event.asset_key.path), position)
    positions = [first_seen[tuple(key)] for key in keys]
    return positions == sorted(positions)


def file_members(path: Path) -> set[str]:
    with path.open(newline="") as handle:
        return {row["user_id"] for row in csv.DictReader(handle)}


def test_whole_graph_materialises_and_syncs_track_membership(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Enough users and weeks for the shipped predictions' guardrails (100 positives and negatives in
    # each of fit, calibration and validation; subscriptions are the rarest outcome).
    last_event = load_sample(isolated_env, tmp_path / "sample", users=15_000, days=100)
    earlier = last_event - timedelta(days=3)

    first = run_pipeline(earlier)
    assert first.checks_failed == 0 and first.checks_passed > 50
    assert first.assets_materialized >= 20  # every dbt model, the predictions and the scheduled syncs
    sizes = {c.cohort_id: c.size for c in first.cohorts}
    assert set(sizes) == declared_cohort_ids()  # every cohort model, registered with its size
    for cohort_id in ("cart_abandoners_24h", "repeat_buyers_90d", "new_users_7d_without_purchase"):
        assert sizes[cohort_id] > 0, sizes  # the generator's users abandon carts, come back and sign up
    assert first.user_count > 10_000 and "favourite_category" in first.properties

    # dbt features -> each prediction (trained: the first run) -> dbt predictive cohorts, in one run.
    assert {p.name for p in first.predictions} == {"purchase_7d", "churn_30d", "subscribe_7d"}
    for prediction in first.predictions:
        m = prediction.metadata
        assert m["retrained"] and m["promoted"] and m["auc"] > 0.6 and m["calibration_error"] < 0.05, (prediction.name, m)
        # What the asset page shows a marketer: a calibration chart, probability by percentile, the
        # candidates beside the winner and what matters, in words.
        assert "| bin | users | predicted | observed |" in m["calibration"]
        assert "| percentile | probability |" in m["probability_by_percentile"]
        assert "(chosen)" in m["candidates"] and m["what_matters"].startswith("- ")
    kinds = {c.cohort_id: c.kind for c in first.cohorts}
    assert kinds["likely_buyers_7d"] == kinds["churn_risk_30d"] == "predictive"
    top = members(isolated_env, "(select user_id from predictions.purchase_7d where percentile >= 90)")
    assert members(isolated_env, "cohorts.likely_buyers_7d") == top and sizes["likely_buyers_7d"] == len(top) > 0
    assert materialisation_order(first.run_id, ["marts", "prediction_features"], ["predictions", "purchase_7d"],
                                 ["cohorts", "likely_buyers_7d"], ["marts", "cohorts"])

    # dbt events -> the recommendation (a model chosen against popularity) -> the lists dbt serves.
    (recommendation,) = first.recommendations
    r = recommendation.metadata
    assert recommendation.name == "products_for_you" and r["recall_vs_popularity"] > 1.5 and r["users_served"] > 5_000
    assert "(chosen)" in r["candidates"] and "popularity" in r["candidates"]
    assert members(isolated_env, "marts.user_recommendations") == members(
        isolated_env, "(select user_id from recommendations.products_for_you)")
    assert materialisation_order(first.run_id, ["marts", "recommendation_events"], ["recommendations", "products_for_you"],
                                 ["marts", "recommendations"], ["marts", "user_recommendations"])

    cart_file = isolated_env.parent / "destinations" / "cart_abandoners_24h_to_files.csv"
    before = members(isolated_env, "cohorts.cart_abandoners_24h")
    assert file_members(cart_file) == before
    first_sync = {s.name: s.metadata for s in first.syncs}["cart_abandoners_24h_to_files"]
    assert first_sync["rows_added"] == len(before) and first_sync["rows_removed"] == 0

    # Three days later membership churns; the sync reports exactly the set differences.
    second = run_pipeline(last_event)
    # Retraining is weekly: this run only scores, with the models of the first.
    versions = {p.name: p.metadata["model_version"] for p in first.predictions}
    assert {p.name: (p.metadata["retrained"], p.metadata["model_version"]) for p in second.predictions} == {
        name: (False, version) for name, version in versions.items()
    }
    after = members(isolated_env, "cohorts.cart_abandoners_24h")
    assert before != after
    second_sync = {s.name: s.metadata for s in second.syncs}["cart_abandoners_24h_to_files"]
    assert second_sync["rows_added"] == len(after - before)
    assert second_sync["rows_removed"] == len(before - after)
    assert file_members(cart_file) == after

    # What `make demo` does next: the on-demand webhook sync to a local, signed receiver. Only
    # cart abandoners with marketing consent may reach it.
    secret = "pipeline-test-secret"
    with WebhookEmulator(secret=secret) as receiver:
        monkeypatch.setenv("COHORTFLOW_WEBHOOK_SECRET", secret)
        monkeypatch.setenv("COHORTFLOW_WEBHOOK_URL", f"{receiver.url}/cohortflow/webhook")
        lines = run_webhook_syncs(isolated_env, receiver)
        held = receiver.members("cart_abandoners_24h_to_webhook")
        profiles = receiver.members("user_properties_to_webhook")
    consented = members(
        isolated_env,
        "(select c.user_id from cohorts.cart_abandoners_24h c join marts.user_properties p using (user_id) "
        "where p.has_marketing_consent)",
    )
    assert set(held) == consented and 0 < len(consented) < len(after), (len(held), len(consented), len(after))
    # And the user properties of every consented user, with their values.
    con = warehouse.connect(isolated_env, read_only=True)
    try:
        expected = {
            user: {"rfm_segment": segment, "favourite_category": category}
            for user, segment, category in con.execute(
                "select user_id, rfm_segment, favourite_category from marts.user_properties where has_marketing_consent"
            ).fetchall()
        }
    finally:
        con.close()
    assert {u: {k: v[k] for k in ("rfm_segment", "favourite_category")} for u, v in profiles.items()} == expected
    assert receiver.signature_failures == 0
    for sync in ("cart_abandoners_24h_to_webhook", "user_properties_to_webhook"):
        assert any(line.startswith(f"  {sync}: +") for line in lines), lines


def test_a_failing_dbt_test_fails_the_run_with_the_reason(isolated_env: Path, tmp_path: Path) -> None:
    load_sample(isolated_env, tmp_path / "sample")
    con = warehouse.connect(isolated_env)
    try:
        # Two events with one event_id: the staging uniqueness test must stop the run before any sync.
        con.execute("insert into raw.events select * from raw.events limit 1")
    finally:
        con.close()
    with pytest.raises(PipelineError, match=r"cohortflow_dbt_models") as error:
        run_pipeline()
    assert "full log:" in str(error.value)
    assert not (isolated_env.parent / "destinations" / "cart_abandoners_24h_to_files.csv").exists()


def test_missing_warehouse_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="does not exist: run `cohortflow ingest`"):
        run_pipeline(warehouse=tmp_path / "nothing.duckdb")
