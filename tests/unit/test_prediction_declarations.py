"""Prediction declarations are checked when they load: file, prediction and key named, did-you-mean."""

from __future__ import annotations

import json

import pytest

from cohortflow.declarations import (
    MAX_ACTIVE_PREDICTIONS,
    DeclarationError,
    load_predictions,
    load_project_predictions,
)


@pytest.fixture(scope="module")
def project_manifest(dbt_manifest) -> dict:
    """The shipped project's manifest (parsed once per session when stale)."""
    return json.loads(dbt_manifest.read_text())


def _manifest(*tables: tuple[str, dict], source_name: str = "predictions", cohorts=("big_spenders_90d",)) -> dict:
    sources = {}
    for name, meta in tables:
        sources[f"source.cohortflow.{source_name}.{name}"] = {
            "name": name, "source_name": source_name, "schema": "predictions", "identifier": name,
            "original_file_path": "models/predictions/_predictions__sources.yml",
            "description": f"{name} description", "config": {"meta": {"prediction": meta}},
        }
    nodes = {
        f"model.cohortflow.{c}": {"name": c, "resource_type": "model", "tags": ["cohort"], "fqn": ["cohortflow", "cohorts", c]}
        for c in cohorts
    }
    return {"sources": sources, "nodes": nodes}


PURCHASE = {"outcome": {"performs": "purchase"}, "within_days": 7}


def _error(manifest: dict) -> str:
    with pytest.raises(DeclarationError) as info:
        load_predictions(manifest)
    return str(info.value)


def test_a_minimal_declaration_gets_the_documented_defaults():
    (p,) = load_predictions(_manifest(("purchase_7d", PURCHASE)))
    assert p.name == "purchase_7d" and p.relation == "predictions.purchase_7d"
    assert p.spec.starting_cohort == "active_last_90_days"
    assert (p.spec.scoring, p.spec.retraining, p.retraining_days) == ("daily", "weekly", 7)
    assert p.spec.min_class_examples == 100
    assert p.spec.outcome.describe() == "performs purchase"


def test_a_misspelt_key_is_named_with_the_file_and_a_suggestion():
    message = _error(_manifest(("purchase_7d", {**PURCHASE, "withn_days": 7})))
    assert "models/predictions/_predictions__sources.yml: prediction 'purchase_7d'" in message
    assert "meta.prediction.withn_days: unknown key 'withn_days' (did you mean 'within_days'?)" in message


def test_a_misspelt_nested_key_and_value_are_named():
    message = _error(_manifest(("p", {"outcome": {"perfroms": "purchase"}, "within_days": 7, "scoring": "hourlyy"})))
    assert "meta.prediction.outcome.perfroms: unknown key 'perfroms' (did you mean 'performs'?)" in message
    assert "meta.prediction.scoring: 'hourlyy' is not one of" in message and "did you mean 'hourly'?" in message


@pytest.mark.parametrize("days", [1, 14, 365])
def test_only_the_four_horizons_are_accepted(days):
    message = _error(_manifest(("p", {**PURCHASE, "within_days": days})))
    assert "meta.prediction.within_days" in message and "7, 30, 60 or 90" in message


def test_an_outcome_needs_exactly_one_of_performs_and_does_not_perform():
    both = _error(_manifest(("p", {"outcome": {"performs": "a", "does_not_perform": "b"}, "within_days": 7})))
    neither = _error(_manifest(("p", {"outcome": {"where": []}, "within_days": 7})))
    for message in (both, neither):
        assert "give exactly one of performs" in message


def test_property_filters_check_their_operator_and_value():
    bad = {"outcome": {"performs": "purchase", "where": [{"property": "category", "operator": "in", "value": "x"}]}, "within_days": 7}
    assert "operator in needs a list of values" in _error(_manifest(("p", bad)))
    good = {"outcome": {"performs": "purchase", "where": [{"property": "category", "value": "electronics"}]}, "within_days": 7}
    (p,) = load_predictions(_manifest(("p", good)))
    assert p.spec.outcome.describe() == "performs purchase where category = 'electronics'"


def test_an_unknown_starting_cohort_suggests_the_closest():
    message = _error(_manifest(("p", {**PURCHASE, "starting_cohort": "big_spender_90d"})))
    assert "starting_cohort 'big_spender_90d' is not a cohort model" in message
    assert "did you mean 'big_spenders_90d'?" in message


def test_every_problem_is_reported_at_once():
    message = _error(_manifest(("a", {**PURCHASE, "scorng": "daily"}), ("b", {"outcome": {"performs": "x"}})))
    assert "prediction 'a'" in message and "prediction 'b'" in message and "within_days: missing" in message


def test_more_than_thirty_active_predictions_are_refused_but_disabled_ones_do_not_count():
    many = [(f"p{i}", PURCHASE) for i in range(MAX_ACTIVE_PREDICTIONS + 1)]
    assert f"at most {MAX_ACTIVE_PREDICTIONS}" in _error(_manifest(*many))
    many[0] = ("p0", {**PURCHASE, "enabled": False})
    assert len(load_predictions(_manifest(*many))) == MAX_ACTIVE_PREDICTIONS + 1


def test_meta_prediction_on_another_source_is_refused():
    message = _error(_manifest(("events", PURCHASE), source_name="raw"))
    assert "belongs on a table of the source 'predictions', not 'raw'" in message


def test_the_shipped_project_declares_checked_predictions(project_manifest):
    manifest = project_manifest
    declared = {p.name: p for p in load_project_predictions(manifest)}
    assert {"purchase_7d", "churn_30d", "subscribe_7d"} <= set(declared)
    assert declared["churn_30d"].spec.outcome.negated
    # marketer-readable words for the features come from the dbt YAML
    assert declared["purchase_7d"].feature_descriptions.get("purchases_30d")


def test_an_outcome_event_outside_the_tracking_plan_is_refused_with_a_suggestion(project_manifest):
    manifest = json.loads(json.dumps(project_manifest))
    source = next(s for s in manifest["sources"].values() if s["source_name"] == "predictions" and s["name"] == "purchase_7d")
    source["config"]["meta"]["prediction"]["outcome"] = {"performs": "purchse"}
    with pytest.raises(DeclarationError) as info:
        load_project_predictions(manifest)
    assert "'purchse' is not an event of the tracking plan (did you mean 'purchase'?)" in str(info.value)


def test_a_prediction_missing_from_the_union_model_is_named(project_manifest):
    manifest = json.loads(json.dumps(project_manifest))
    source = next(s for s in manifest["sources"].values() if s["source_name"] == "predictions" and s["name"] == "purchase_7d")
    extra = json.loads(json.dumps(source))
    extra.update(name="repeat_30d", identifier="repeat_30d", unique_id="source.cohortflow.predictions.repeat_30d")
    manifest["sources"][extra["unique_id"]] = extra
    with pytest.raises(DeclarationError) as info:
        load_project_predictions(manifest)
    assert "add 'repeat_30d' to prediction_names() in macros/predictions.sql" in str(info.value)
