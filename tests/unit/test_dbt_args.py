import json
from datetime import datetime
from pathlib import Path

import pytest

from orchestration.dbt_config import CohortflowTranslator, dbt_build_args


def test_one_build_with_as_of_and_warehouse_as_vars():
    args = dbt_build_args("2011-12-09T12:50:00Z", Path("/data/w.duckdb"))
    assert args[:2] == ["build", "--vars"]
    assert json.loads(args[2]) == {"as_of": "2011-12-09 12:50:00", "warehouse": "/data/w.duckdb"}
    assert "--full-refresh" not in args


def test_as_of_is_resolved_once_to_a_fixed_moment_when_unset():
    # Every model of one run must see the same instant, so "now" is pinned before dbt starts.
    variables = json.loads(dbt_build_args(None, Path("/w.duckdb"))[2])
    assert datetime.strptime(variables["as_of"], "%Y-%m-%d %H:%M:%S")


def test_full_refresh_flag():
    assert dbt_build_args(datetime(2020, 1, 1), Path("/w.duckdb"), full_refresh=True)[-1] == "--full-refresh"


def test_bad_as_of_is_refused_before_dbt_runs():
    with pytest.raises(ValueError, match="as_of"):
        dbt_build_args("not-a-time", Path("/w.duckdb"))


@pytest.mark.parametrize(
    "props, group",
    [
        ({"resource_type": "model", "fqn": ["cohortflow", "staging", "stg_events"], "meta": {}, "config": {}}, "staging"),
        ({"resource_type": "model", "fqn": ["cohortflow", "cohorts", "repeat_buyers_90d"], "meta": {}, "config": {}}, "cohorts"),
        ({"resource_type": "model", "fqn": ["cohortflow", "marts", "x"], "meta": {"dagster": {"group": "vip"}}, "config": {}}, "vip"),
        ({"resource_type": "source", "source_name": "raw", "fqn": ["cohortflow", "raw", "events"], "meta": {}, "config": {}}, "raw"),
    ],
)
def test_groups_follow_folders_unless_meta_says_otherwise(props, group):
    assert CohortflowTranslator().get_group_name(props) == group
