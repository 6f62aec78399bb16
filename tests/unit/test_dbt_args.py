import os
from datetime import datetime
from pathlib import Path

import pytest

from orchestration.dbt_config import CohortflowTranslator, dbt_build_invocation, environment


def test_one_build_with_as_of_and_warehouse_in_the_environment():
    build = dbt_build_invocation("2011-12-09T12:50:00Z", Path("/data/w.duckdb"))
    # No --vars: vars that differ from the last parse make dbt re-parse the whole project.
    assert build.args == ["build"]
    assert build.env == {"COHORTFLOW_AS_OF": "2011-12-09 12:50:00", "COHORTFLOW_WAREHOUSE": "/data/w.duckdb"}


def test_as_of_is_resolved_once_to_a_fixed_moment_when_unset():
    # Every model of one run must see the same instant, so "now" is pinned before dbt starts.
    build = dbt_build_invocation(None, Path("/w.duckdb"))
    assert datetime.strptime(build.env["COHORTFLOW_AS_OF"], "%Y-%m-%d %H:%M:%S")


def test_full_refresh_flag():
    assert dbt_build_invocation(datetime(2020, 1, 1), Path("/w.duckdb"), full_refresh=True).args == ["build", "--full-refresh"]


def test_bad_as_of_is_refused_before_dbt_runs():
    with pytest.raises(ValueError, match="as_of"):
        dbt_build_invocation("not-a-time", Path("/w.duckdb"))


def test_environment_is_restored_after_the_subprocess_started(monkeypatch):
    monkeypatch.setenv("COHORTFLOW_AS_OF", "2000-01-01 00:00:00")
    monkeypatch.delenv("COHORTFLOW_TEST_UNSET", raising=False)
    with environment({"COHORTFLOW_AS_OF": "2011-12-09 12:50:00", "COHORTFLOW_TEST_UNSET": "x"}):
        assert os.environ["COHORTFLOW_AS_OF"] == "2011-12-09 12:50:00"
    assert os.environ["COHORTFLOW_AS_OF"] == "2000-01-01 00:00:00"
    assert "COHORTFLOW_TEST_UNSET" not in os.environ


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
