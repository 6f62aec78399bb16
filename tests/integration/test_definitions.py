"""The code location loads, and its asset graph, jobs and schedules are what we meant (no silent rewiring).

The snapshot lists every asset with its group and upstream keys, the checks and kinds of the sync
assets, every job's tags and syncs, and every schedule. After an intended change, rewrite it with
`UPDATE_SNAPSHOTS=1 pytest tests/integration/test_definitions.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

from cohortflow.warehouse import DBT_PROJECT_DIR, PROJECT_ROOT

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


@pytest.fixture(scope="module")
def defs(dbt_manifest):
    from orchestration.definitions import defs

    return defs


def graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        entry = {
            "group": node.group_name,
            "upstream": sorted(parent.to_user_string() for parent in node.parent_keys),
            "materializable": node.is_materializable,
        }
        if key.path[0] == "syncs":
            entry["checks"] = sorted(check.name for check in node.check_keys)
            entry["kinds"] = sorted(node.kinds)
            entry["schedule"] = node.metadata["schedule"]
        assets[key.to_user_string()] = entry
    jobs = {}
    for job in sorted(defs.jobs, key=lambda j: j.name):
        resolved = defs.resolve_job_def(job.name)
        keys = resolved.asset_layer.asset_graph.executable_asset_keys & set(resolved.asset_layer.selected_asset_keys)
        jobs[job.name] = {
            "tags": dict(resolved.tags),
            "syncs": sorted(k.to_user_string() for k in keys if k.path[0] == "syncs"),
            "runs_dbt": any(k.path[0] != "syncs" for k in keys),
        }
    schedules = {
        s.name: {"cron": s.cron_schedule, "timezone": s.execution_timezone, "job": s.job_name}
        for s in sorted(defs.schedules, key=lambda s: s.name)
    }
    return {"assets": assets, "jobs": jobs, "schedules": schedules}


def test_definitions_load_with_the_expected_asset_graph_jobs_and_schedules(defs):
    actual = graph_snapshot(defs)
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(actual, indent=2) + "\n")
    assert actual == json.loads(SNAPSHOT.read_text())


def test_every_sync_depends_on_the_model_it_ships_and_checks_its_rejected_share(defs):
    graph = defs.resolve_asset_graph()
    syncs = [key for key in graph.get_all_asset_keys() if key.path[0] == "syncs"]
    assert len(syncs) >= 4
    for key in syncs:
        node = graph.get(key)
        assert len(node.parent_keys) == 1
        assert node.metadata["model"] == next(iter(node.parent_keys)).path[-1]
        assert {check.name for check in node.check_keys} == {"rejected_share"}
        assert {"mode", "schedule", "destination_type"} <= set(node.metadata)


def test_on_demand_syncs_stay_out_of_the_main_job_and_scheduled_ones_are_in(defs):
    from orchestration.definitions import sync_declarations

    main = defs.resolve_job_def("cohortflow_job")
    selected = set(main.asset_layer.selected_asset_keys)
    for declaration in sync_declarations:
        key = dg.AssetKey(["syncs", declaration.spec.name])
        assert (key in selected) == (declaration.schedule != "on_demand"), declaration.spec.name
    assert any(d.schedule == "on_demand" for d in sync_declarations)


def test_every_job_runs_in_process_and_queues_on_the_warehouse(defs):
    for job in defs.jobs:
        resolved = defs.resolve_job_def(job.name)
        # One DuckDB file, one writer: steps must not run in parallel processes, runs not at once.
        assert resolved.executor_def.name == "in_process"
        assert resolved.tags.get("cohortflow/warehouse") == "duckdb", job.name
    hourly = defs.resolve_schedule_def("hourly_refresh")
    assert (hourly.cron_schedule, hourly.execution_timezone, hourly.job_name) == ("0 * * * *", "UTC", "cohortflow_job")


def test_the_instance_runs_one_warehouse_run_at_a_time(tmp_path: Path):
    """The committed dagster.yaml loads, and limits both the jobs' tag and the code location to one run."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    location = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]["location_name"]
    assert {"key": "cohortflow/warehouse", "value": "duckdb", "limit": 1} in limits
    assert {"key": "dagster/code_location", "value": location, "limit": 1} in limits


def test_hourly_schedule_computes_as_of_the_tick_and_ships_the_hourly_syncs(defs):
    from orchestration.definitions import sync_declarations

    schedule = defs.resolve_schedule_def("hourly_refresh")
    tick = datetime(2011, 12, 9, 12, 0, tzinfo=timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=tick) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.run_config["ops"]["cohortflow_dbt_models"]["config"]["as_of"] == "2011-12-09 12:00:00"
    assert request.run_key == "2011-12-09 12:00:00"
    selected = set(request.asset_selection)
    assert dg.AssetKey(["marts", "user_properties"]) in selected  # the whole dbt project
    for declaration in sync_declarations:
        key = dg.AssetKey(["syncs", declaration.spec.name])
        assert (key in selected) == (declaration.schedule == "hourly"), declaration.spec.name


def test_a_sync_schedule_skips_its_tick_while_the_previous_run_is_unfinished(defs):
    schedule = defs.resolve_schedule_def("syncs_daily_schedule")
    assert (schedule.cron_schedule, schedule.job_name) == ("0 0 * * *", "syncs_daily")
    tick = datetime(2026, 3, 1, 0, 0, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            [request] = schedule.evaluate_tick(context).run_requests
        assert request.run_key == tick.isoformat()

        run = instance.create_run_for_job(defs.resolve_job_def("syncs_daily"), status=dg.DagsterRunStatus.NOT_STARTED)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            result = schedule.evaluate_tick(context)
        assert not result.run_requests
        assert run.run_id in result.skip_message

        instance.report_run_canceled(run)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            assert len(schedule.evaluate_tick(context).run_requests) == 1


def test_the_projects_declarations(dbt_manifest):
    from orchestration.definitions import sync_declarations

    by_name = {d.spec.name: d for d in sync_declarations}
    parquet = by_name["user_properties_to_parquet"]
    assert (parquet.destination.type, parquet.spec.mode.value, parquet.spec.consent_relation) == ("parquet", "upsert", None)
    webhook = by_name["cart_abandoners_24h_to_webhook"]
    assert (webhook.destination.type, webhook.schedule) == ("webhook", "on_demand")
    assert (webhook.spec.consent_relation, webhook.spec.consent_column) == ("marts.user_properties", "has_marketing_consent")
    assert dict(webhook.spec.identifiers) == {"user_id": "user_id"}


def test_a_typo_in_destinations_yml_fails_loading_naming_file_destination_and_setting(dbt_manifest, tmp_path: Path):
    from cohortflow.sync_declarations import DeclarationError, load_project_declarations

    manifest = json.loads(dbt_manifest.read_text())
    broken = tmp_path / "destinations.yml"
    broken.write_text((DBT_PROJECT_DIR / "destinations.yml").read_text().replace("    url:", "    ulr:"))
    with pytest.raises(DeclarationError, match=rf"{broken}: destinations.local_webhook: .*unknown setting\(s\) \['ulr'\]"):
        load_project_declarations(manifest, broken)


def test_an_unset_secret_does_not_stop_the_definitions_from_loading(dbt_manifest, tmp_path: Path, monkeypatch):
    from cohortflow.sync_declarations import DeclarationError, load_project_declarations

    manifest = json.loads(dbt_manifest.read_text())
    no_default = tmp_path / "destinations.yml"
    no_default.write_text(
        (DBT_PROJECT_DIR / "destinations.yml").read_text().replace(
            "{{ env_var('COHORTFLOW_WEBHOOK_SECRET', 'local-demo-signing-secret') }}", "{{ env_var('WEBHOOK_SECRET_FOR_TEST') }}"
        )
    )
    monkeypatch.delenv("WEBHOOK_SECRET_FOR_TEST", raising=False)
    declarations = {d.spec.name: d for d in load_project_declarations(manifest, no_default)}
    webhook = declarations["cart_abandoners_24h_to_webhook"]
    with pytest.raises(DeclarationError, match=r"destinations.local_webhook.secret: environment variable WEBHOOK_SECRET_FOR_TEST is not set"):
        webhook.destination.build(tmp_path / "w.duckdb", webhook.spec.name)
    declarations["cart_abandoners_24h_to_files"].destination.build(tmp_path / "w.duckdb", "x")  # others are fine


def test_one_job_and_schedule_per_cadence(dbt_manifest):
    import dataclasses

    from orchestration.definitions import sync_declarations
    from orchestration.syncs import build_sync_schedules

    by_name = {d.spec.name: d for d in sync_declarations}
    declarations = [
        dataclasses.replace(by_name["cart_abandoners_24h_to_files"], schedule="every_minute", cron="* * * * *"),
        dataclasses.replace(by_name["repeat_buyers_90d_to_files"], schedule="15 3 * * 1-5", cron="15 3 * * 1-5"),
        dataclasses.replace(by_name["user_properties_to_parquet"], schedule="15 3 * * 1-5", cron="15 3 * * 1-5"),
        by_name["cart_abandoners_24h_to_webhook"],  # on demand: no schedule
    ]
    jobs, schedules = build_sync_schedules(declarations)
    assert {s.name: (s.cron_schedule, s.job_name) for s in schedules} == {
        "syncs_every_minute_schedule": ("* * * * *", "syncs_every_minute"),
        "syncs_cron_15_3_x_x_1_5_schedule": ("15 3 * * 1-5", "syncs_cron_15_3_x_x_1_5"),
    }
    assert all(job.tags == {"cohortflow/warehouse": "duckdb"} for job in jobs)


def test_each_prediction_sits_between_its_features_and_its_predictive_cohorts(defs):
    from orchestration.definitions import prediction_declarations

    graph = defs.resolve_asset_graph()
    names = {p.name for p in prediction_declarations}
    assert names == {"purchase_7d", "churn_30d", "subscribe_7d"}
    for name in names:
        node = graph.get(dg.AssetKey(["predictions", name]))
        assert node.group_name == "predictions"
        assert {dg.AssetKey(["marts", "prediction_features"]), dg.AssetKey(["marts", "prediction_outcomes"])} <= set(node.parent_keys)
        assert {check.name for check in node.check_keys} == {"realised_performance"}
        # dbt reads the scores back: the union of every prediction, and the propensities.
        assert dg.AssetKey(["marts", "predictions"]) in node.child_keys
    assert dg.AssetKey(["cohorts", "likely_buyers_7d"]) in graph.get(dg.AssetKey(["predictions", "purchase_7d"])).child_keys
    assert dg.AssetKey(["cohorts", "churn_risk_30d"]) in graph.get(dg.AssetKey(["predictions", "churn_30d"])).child_keys
    # The main job runs them all; the refresh scores hourly ones every hour and daily ones at midnight.
    main = set(defs.resolve_job_def("cohortflow_job").asset_layer.selected_asset_keys)
    assert {dg.AssetKey(["predictions", n]) for n in names} <= main
    schedule = defs.resolve_schedule_def("hourly_refresh")
    for hour, expected in ((12, {"purchase_7d"}), (0, names)):
        tick = datetime(2026, 3, 1, hour, 0, tzinfo=timezone.utc)
        with dg.build_schedule_context(scheduled_execution_time=tick) as context:
            [request] = schedule.evaluate_tick(context).run_requests
        assert {k.path[1] for k in request.asset_selection if k.path[0] == "predictions"} == expected


def test_each_recommendation_sits_between_its_events_and_the_lists_dbt_serves(defs):
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(["recommendations", "products_for_you"]))
    assert node.group_name == "recommendations"
    assert {dg.AssetKey(["marts", "recommendation_events"]), dg.AssetKey(["marts", "recommendation_items"])} <= set(node.parent_keys)
    assert dg.AssetKey(["marts", "recommendations"]) in node.child_keys
    assert {check.name for check in node.check_keys} == {"treatment_vs_control"}
    main = set(defs.resolve_job_def("cohortflow_job").asset_layer.selected_asset_keys)
    assert node.key in main
    # Refreshed daily: in the midnight refresh only.
    schedule = defs.resolve_schedule_def("hourly_refresh")
    for hour, expected in ((12, False), (0, True)):
        tick = datetime(2026, 3, 1, hour, 0, tzinfo=timezone.utc)
        with dg.build_schedule_context(scheduled_execution_time=tick) as context:
            [request] = schedule.evaluate_tick(context).run_requests
        assert (node.key in set(request.asset_selection)) == expected
