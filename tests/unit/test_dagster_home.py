"""`make ui` / `cohortflow run` use a Dagster instance with telemetry and the first-run pop-up off."""

from __future__ import annotations

import yaml

from cohortflow.pipeline import DEFAULT_DAGSTER_HOME, ensure_dagster_home
from cohortflow.ui import dagster_dev_command
from cohortflow.warehouse import PROJECT_ROOT


def test_a_new_dagster_home_gets_telemetry_and_nux_off(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert ensure_dagster_home() == home
    settings = yaml.safe_load((home / "dagster.yaml").read_text())
    assert settings == {"telemetry": {"enabled": False}, "nux": {"enabled": False}}


def test_an_existing_instance_configuration_is_kept(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nrun_queue:\n  max_concurrent_runs: 1\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home()
    assert "run_queue" in (home / "dagster.yaml").read_text()


def test_the_repo_local_instance_is_the_default(monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", "x")  # so that teardown restores whatever was there before
    monkeypatch.delenv("DAGSTER_HOME")
    assert ensure_dagster_home() == DEFAULT_DAGSTER_HOME.resolve()
    committed = yaml.safe_load((DEFAULT_DAGSTER_HOME / "dagster.yaml").read_text())
    assert committed["telemetry"] == {"enabled": False} and committed["nux"] == {"enabled": False}


def test_ui_serves_this_workspace_on_loopback_by_default():
    command = dagster_dev_command()
    assert command[1:4] == ["dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
    assert command[command.index("-h") + 1] == "127.0.0.1"
