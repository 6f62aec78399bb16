"""Shared fixtures: an isolated warehouse and Dagster instance per test, the dbt manifest once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; in CI its absence is a failure, elsewhere a skip."""
    if not SHARED_DATA.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED_DATA} is missing in CI")
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dbt_manifest() -> Path:
    """A fresh manifest for Dagster to load (parsed once per session, only when stale)."""
    from cohortflow.dbt_manifest import ensure_manifest

    return ensure_manifest()


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary warehouse file and Dagster home, set the way the CLI would set them."""
    warehouse = tmp_path / "warehouse" / "test.duckdb"
    warehouse.parent.mkdir()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return warehouse
