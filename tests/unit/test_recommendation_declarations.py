"""Recommendation declarations are checked when they load: file, recommendation and key named, did-you-mean."""

from __future__ import annotations

import copy
import json

import pytest

from cohortflow.declarations import DeclarationError, load_project_recommendations, load_recommendations

FILE = "models/recommendations/_recommendations__sources.yml"
SHIPPED = {"interactions": {"view_item": 1, "purchase": 5}, "outcome": "purchase"}


@pytest.fixture(scope="module")
def project_manifest(dbt_manifest) -> dict:
    return json.loads(dbt_manifest.read_text())


def _manifest(name: str, meta: dict, cohorts=("big_spenders_90d",)) -> dict:
    return {
        "sources": {
            f"source.cohortflow.recommendations.{name}": {
                "name": name, "source_name": "recommendations", "schema": "recommendations", "identifier": name,
                "original_file_path": FILE, "description": "", "config": {"meta": {"recommendation": meta}},
            }
        },
        "nodes": {
            f"model.cohortflow.{c}": {"name": c, "resource_type": "model", "tags": ["cohort"], "fqn": ["cohortflow", "cohorts", c]}
            for c in cohorts
        },
    }


def _error(manifest: dict, loader=load_recommendations) -> str:
    with pytest.raises(DeclarationError) as info:
        loader(manifest)
    return str(info.value)


def test_a_minimal_declaration_gets_the_documented_defaults():
    (r,) = load_recommendations(_manifest("for_you", SHIPPED))
    s = r.spec
    assert (s.item_property, s.users, s.candidates.source, s.candidates.top, s.candidates.within_days) == (
        "item_id", "active_last_90_days", "most_frequent", 50, 30)
    assert (s.items_per_user, s.control_percent, s.refresh, s.fallback, s.attribution_days) == (10, 10, "daily", "trending", 7)
    assert s.exclude.converted and s.exclude.out_of_stock and s.exclude.items == []


def test_mistakes_are_named_with_the_file_the_key_and_a_suggestion():
    message = _error(_manifest("for_you", {**SHIPPED, "item_per_user": 5, "refresh": "hourley",
                                           "candidates": {"from": "list"}, "items_per_user": 101}))
    assert f"{FILE}: recommendation 'for_you': meta.recommendation.item_per_user: unknown key 'item_per_user' (did you mean 'items_per_user'?)" in message
    assert "meta.recommendation.refresh: 'hourley' is not one of 'hourly' or 'daily' (did you mean 'hourly'?)" in message
    assert "from: list needs items" in message
    assert "meta.recommendation.items_per_user" in message and "100" in message


def test_weights_must_be_positive_and_the_cohort_must_exist():
    assert "weights must be positive" in _error(_manifest("for_you", {**SHIPPED, "interactions": {"view_item": 0}}))
    message = _error(_manifest("for_you", {**SHIPPED, "users": "big_spender_90d"}))
    assert "meta.recommendation.users 'big_spender_90d' is not a cohort model" in message
    assert "(did you mean 'big_spenders_90d'?)" in message


def test_the_shipped_project_loads_and_its_events_are_checked_against_the_tracking_plan(project_manifest):
    (r,) = load_project_recommendations(project_manifest)
    assert r.name == "products_for_you" and r.spec.candidates.source == "catalogue"
    broken = copy.deepcopy(project_manifest)
    source = broken["sources"]["source.cohortflow.recommendations.products_for_you"]
    source["config"]["meta"]["recommendation"]["interactions"] = {"view_itme": 1}
    source["config"]["meta"]["recommendation"]["item_property"] = "item"
    message = _error(broken, load_project_recommendations)
    assert "meta.recommendation.interactions.view_itme: 'view_itme' is not an event of the tracking plan (did you mean 'view_item'?)" in message
    assert "meta.recommendation.item_property: 'item' is not a property of 'purchase'" in message
