"""`cohortflow sync ...`: the real CLI on the real project's declarations, against a small warehouse.

The relations the syncs read are created directly in DuckDB (a dbt run would take most of a minute).
Every test uses the same warehouse path, rebuilt each time, so the manifest is parsed for it once.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cohortflow import warehouse as wh
from cohortflow.cli import main

ENTERED = datetime(2026, 3, 1, 12, 0)
CART = "cart_abandoners_24h_to_files"


@pytest.fixture(scope="module")
def warehouse_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sync_cli") / "warehouse" / "w.duckdb"


@pytest.fixture
def warehouse(warehouse_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh warehouse at the module's path: the cart-abandoners cohort u1, u2, u3 and user properties."""
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", str(warehouse_file))  # restored after the test (--warehouse sets it)
    monkeypatch.delenv("COHORTFLOW_FILES_DIR", raising=False)
    if warehouse_file.parent.exists():
        shutil.rmtree(warehouse_file.parent)
    con = wh.connect(warehouse_file)
    try:
        con.execute("create schema cohorts; create schema marts")
        con.execute("create table cohorts.cart_abandoners_24h (user_id varchar, entered_at timestamp)")
        con.execute("insert into cohorts.cart_abandoners_24h values ('u1', ?), ('u2', ?), ('u3', ?)", [ENTERED] * 3)
        con.execute(
            "create table marts.user_properties as select * from (values ('u1', true), ('u2', true), ('u3', false)) "
            "t(user_id, has_marketing_consent)"
        )
    finally:
        con.close()
    return warehouse_file


def cli(path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--warehouse", str(path), "sync", *args])


def exported(path: Path) -> Path:
    return path.parent / "destinations" / f"{CART}.csv"


def members(file: Path) -> set[str]:
    with file.open(newline="") as handle:
        return {row["user_id"] for row in csv.DictReader(handle)}


def test_list_shows_every_declared_sync_and_its_last_run(warehouse: Path) -> None:
    listed = cli(warehouse, "list")
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.output.splitlines()
    assert header.split()[:5] == ["SYNC", "MODEL", "DESTINATION", "MODE", "SCHEDULE"]
    by_name = {row.split()[0]: row for row in rows}
    assert {CART, "repeat_buyers_90d_to_files", "user_properties_to_parquet", "cart_abandoners_24h_to_webhook"} <= set(by_name)
    assert "local_webhook (webhook)" in by_name["cart_abandoners_24h_to_webhook"]
    assert "on_demand" in by_name["cart_abandoners_24h_to_webhook"]
    assert by_name[CART].endswith("never run")

    assert cli(warehouse, "run", CART).exit_code == 0
    listed = cli(warehouse, "list")
    row = next(line for line in listed.output.splitlines() if line.startswith(CART + " "))
    assert "succeeded 20" in row and "mirror" in row and "hourly" in row


def test_run_prints_the_result_and_ships_the_audience(warehouse: Path) -> None:
    result = cli(warehouse, "run", CART)
    assert result.exit_code == 0, result.output
    assert f"sync {CART}" in result.output and "SUCCEEDED" in result.output
    assert "sent: 3 added, 0 changed, 0 removed" in result.output
    assert members(exported(warehouse)) == {"u1", "u2", "u3"}

    again = cli(warehouse, "run", CART, "--full-resync")
    assert again.exit_code == 0, again.output
    assert "full resync" in again.output and "sent: 3 added" in again.output


def test_a_dry_run_prints_counts_and_sample_records_and_sends_nothing(warehouse: Path) -> None:
    result = cli(warehouse, "run", CART, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "DRY_RUN" in result.output and "would send: 3 added" in result.output
    assert "sample add:" in result.output
    assert '"user_id": "u1"' in result.output and '"entered_at": "2026-03-01 12:00:00"' in result.output
    assert not exported(warehouse).exists()


def test_a_failed_run_exits_1_with_the_reason(warehouse: Path) -> None:
    result = cli(warehouse, "run", "repeat_buyers_90d_to_files")  # its cohort was never built here
    assert result.exit_code == 1
    assert "error:" in result.output and "cohorts.repeat_buyers_90d" in result.output and "does not exist" in result.output
    status = cli(warehouse, "status", "repeat_buyers_90d_to_files")
    assert status.exit_code == 0
    assert "failed" in status.output and "does not exist" in status.output


def test_an_unreachable_webhook_fails_only_its_own_run(warehouse: Path, monkeypatch) -> None:
    # A 401 from a receiver that expects another secret: refused at once, not retried.
    from reverse_etl.emulators.webhook import WebhookEmulator

    with WebhookEmulator(secret="the-receivers-secret") as receiver:
        monkeypatch.setenv("COHORTFLOW_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("COHORTFLOW_WEBHOOK_SECRET", "another-secret")
        result = cli(warehouse, "run", "cart_abandoners_24h_to_webhook")
    assert result.exit_code == 1
    assert "401" in result.output and "another-secret" not in result.output
    assert cli(warehouse, "run", CART).exit_code == 0


def test_unknown_sync_names_are_refused_with_a_suggestion(warehouse: Path) -> None:
    for command in (["run"], ["status"], ["pause"], ["resume"]):
        result = cli(warehouse, *command, "cart_abandoners_24h_to_file")
        assert result.exit_code == 1
        assert "no sync named 'cart_abandoners_24h_to_file' (did you mean 'cart_abandoners_24h_to_files'?)" in result.output


def test_pause_and_resume(warehouse: Path) -> None:
    paused = cli(warehouse, "pause", CART, "--reason", "campaign on hold")
    assert paused.exit_code == 0, paused.output
    assert "paused: campaign on hold" in paused.output
    assert "yes: campaign on hold" in next(l for l in cli(warehouse, "list").output.splitlines() if l.startswith(CART))
    assert "PAUSED since" in cli(warehouse, "status", CART).output

    run = cli(warehouse, "run", CART)
    assert run.exit_code == 0, run.output
    assert "PAUSED" in run.output and f"cohortflow sync resume {CART}" in run.output
    assert not exported(warehouse).exists()

    resumed = cli(warehouse, "resume", CART)
    assert resumed.exit_code == 0 and f"sync {CART} resumed" in resumed.output
    assert "sent: 3 added" in cli(warehouse, "run", CART).output
    assert cli(warehouse, "resume", CART).output.strip() == f"sync {CART} was not paused"


def test_status_lists_runs_and_what_happened_to_a_record(warehouse: Path) -> None:
    assert "never run" in cli(warehouse, "status", CART).output
    assert cli(warehouse, "run", CART).exit_code == 0
    con = wh.connect(warehouse)
    try:
        con.execute("delete from cohorts.cart_abandoners_24h where user_id = 'u1'")
    finally:
        con.close()
    assert cli(warehouse, "run", CART).exit_code == 0

    status = cli(warehouse, "status", CART)
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert lines[0].startswith(f"sync {CART}: cart_abandoners_24h → local_files (csv), mirror, hourly")
    header = lines[1].split()
    assert header[:6] == ["STARTED", "STATUS", "ADDED", "CHANGED", "REMOVED", "REJECTED"]
    newest, oldest = lines[2].split(), lines[3].split()
    assert newest[2:6] == ["succeeded", "0", "0", "1"] and oldest[2:6] == ["succeeded", "3", "0", "0"]

    record = cli(warehouse, "status", CART, "--record", "u1")
    assert record.exit_code == 0, record.output
    assert "record u1: not in the destination" in record.output
    operations = [line.split()[4] for line in record.output.splitlines()[3:]]
    assert operations == ["remove", "add"]  # newest first

    kept = cli(warehouse, "status", CART, "--record", "u2")
    assert "record u2: in the destination since" in kept.output
    assert "no run has sent it" in cli(warehouse, "status", CART, "--record", "nobody").output


@pytest.mark.parametrize("command", [[], ["list"], ["run"], ["status"], ["pause"], ["resume"]])
def test_every_sync_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, ["sync", *command, "--help"])
    assert result.exit_code == 0
    assert "Usage: main sync" in result.output or "Usage: cohortflow sync" in result.output


def test_a_sync_name_appended_twice_to_one_file_is_refused_by_the_real_project(tmp_path: Path) -> None:
    """The reported reproduction, through real dbt: its partial parse keeps one exposure; the loader refuses both."""
    import json

    from cohortflow.dbt_manifest import dbt_executable, ensure_manifest
    from cohortflow.warehouse import DBT_PROJECT_DIR, WAREHOUSE_ENV_VAR, warehouse_path
    from cohortflow.sync_declarations import DeclarationError, load_project_declarations

    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    ensure_manifest(project, force=True)  # parsed once, as any working copy is
    syncs = project / "models" / "syncs" / "file_syncs.yml"
    lines_before = syncs.read_text().count("\n")
    syncs.write_text(syncs.read_text() + (
        f"\n  - name: {CART}\n"
        "    type: application\n"
        "    owner: {name: Someone else}\n"
        "    depends_on: [ref('repeat_buyers_90d')]\n"
        "    config: {meta: {sync: {destination: local_parquet, mode: upsert, primary_key: [user_id]}}}\n"
    ))
    # A partial parse (what `dagster dev` or a plain `dbt parse` does) keeps one of the two silently...
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", WAREHOUSE_ENV_VAR: str(warehouse_path())}
    subprocess.run(
        [dbt_executable(), "parse", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet"],
        cwd=project, check=True, capture_output=True, env=env,
    )
    manifest = json.loads((project / "target" / "manifest.json").read_text())
    assert sum(e["name"] == CART for e in manifest["exposures"].values()) == 1
    # ... and the loader still refuses both, naming where each is.
    with pytest.raises(DeclarationError) as info:
        load_project_declarations(manifest, project / "destinations.yml", project_dir=project)
    message = str(info.value)
    assert f"{CART!r} is declared twice" in message and f"models/syncs/file_syncs.yml:{lines_before + 2}" in message
    # ensure_manifest (what `cohortflow` and the code location use) parses from scratch after a YAML
    # edit: there dbt itself refuses the pair.
    os.utime(syncs)
    with pytest.raises(RuntimeError, match=f'dbt found two exposures with the name "{CART}"'):
        ensure_manifest(project)
