"""The code location loads, and its asset graph is what we meant it to be (no silent rewiring).

The snapshot lists every asset with its group and upstream keys. After an intended change, rewrite it
with `UPDATE_SNAPSHOTS=1 pytest tests/integration/test_definitions.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


@pytest.fixture(scope="module")
def defs(dbt_manifest):
    from orchestration.definitions import defs

    return defs


def graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    return {
        key.to_user_string(): {
            "group": graph.get(key).group_name,
            "upstream": sorted(parent.to_user_string() for parent in graph.get(key).parent_keys),
            "materializable": graph.get(key).is_materializable,
        }
        for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    }


def test_definitions_load_with_the_expected_asset_graph(defs):
    actual = graph_snapshot(defs)
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(actual, indent=2) + "\n")
    assert actual == json.loads(SNAPSHOT.read_text())


def test_every_sync_depends_on_the_model_it_ships(defs):
    graph = defs.resolve_asset_graph()
    syncs = [key for key in graph.get_all_asset_keys() if key.path[0] == "syncs"]
    assert syncs
    for key in syncs:
        node = graph.get(key)
        assert len(node.parent_keys) == 1
        assert node.metadata["model"] == next(iter(node.parent_keys)).path[-1]


def test_job_schedule_and_executor(defs):
    job = defs.resolve_job_def("cohortflow_job")
    # One DuckDB file, one writer: steps must not run in parallel processes.
    assert job.executor_def.name == "in_process"
    [schedule] = defs.schedules
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.execution_timezone == "UTC"


def test_hourly_schedule_computes_as_of_the_tick(defs):
    from datetime import datetime, timezone

    schedule = defs.resolve_schedule_def("hourly_refresh")
    tick = datetime(2011, 12, 9, 12, 0, tzinfo=timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=tick) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.run_config["ops"]["cohortflow_dbt_models"]["config"]["as_of"] == "2011-12-09 12:00:00"
    assert request.run_key == "2011-12-09 12:00:00"
