"""The CLI: every command has --help, and wrong usage / bad input exit with a clear code and message."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cohortflow.cli import main


@pytest.mark.parametrize("command", [[], ["generate"], ["ingest"], ["run"], ["demo"], ["ui"], ["tracking-plan"],
                                     ["tracking-plan", "draft"], ["tracking-plan", "check"]])
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_unknown_format_is_a_usage_error():
    result = CliRunner().invoke(main, ["ingest", "--format", "xml", "events.xml"])
    assert result.exit_code == 2
    assert "'xml' is not one of" in result.output


def test_bad_as_of_is_a_usage_error_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", str(tmp_path / "w.duckdb"))
    result = CliRunner().invoke(main, ["run", "--as-of", "next thursday"])
    assert result.exit_code == 2
    assert "--as-of" in result.output and "next thursday" in result.output


def test_missing_input_file_fails_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", str(tmp_path / "w.duckdb"))
    missing = tmp_path / "nope.jsonl"
    result = CliRunner().invoke(main, ["ingest", "--format", "amplitude", str(missing)])
    assert result.exit_code == 1
    assert str(missing) in result.output


def test_run_without_a_warehouse_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", "restored-after-the-test")  # --warehouse sets it
    result = CliRunner().invoke(main, ["--warehouse", str(tmp_path / "empty.duckdb"), "run"])
    assert result.exit_code == 1
    assert "cohortflow ingest" in result.output


def test_generate_rejects_nonsense_sizes(tmp_path):
    result = CliRunner().invoke(main, ["generate", "--users", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--users" in result.output
