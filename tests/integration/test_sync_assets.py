"""The project's sync assets, materialised in process against a small warehouse built in DuckDB.

The declarations come from the real dbt project's manifest; only the relations they read are created
here (running dbt would take most of a minute). The webhook receiver is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from cohortflow import warehouse as wh
from orchestration.resources import WarehouseResource
from orchestration.syncs import REJECTED_SHARE_CHECK, rejected_share_check
from reverse_etl import SyncMode, SyncResult
from reverse_etl.emulators.webhook import WebhookEmulator

SECRET = "test-signing-secret"
ENTERED = datetime(2026, 3, 1, 12, 0)


@pytest.fixture(scope="module")
def project(dbt_manifest):
    from orchestration import definitions

    return definitions


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A warehouse with the cart-abandoners cohort (u1, u2, u3) and user properties (u3 without consent)."""
    monkeypatch.delenv("COHORTFLOW_FILES_DIR", raising=False)
    path = tmp_path / "warehouse" / "w.duckdb"
    con = wh.connect(path)
    try:
        con.execute("create schema cohorts; create schema marts")
        con.execute("create table cohorts.cart_abandoners_24h (user_id varchar, entered_at timestamp)")
        set_members(con, ["u1", "u2", "u3"])
        con.execute(
            "create table marts.user_properties as select * from (values "
            "('u1', true, 'JP'), ('u2', true, 'FR'), ('u3', false, 'US'), ('u4', true, 'DE')"
            ") t(user_id, has_marketing_consent, country)"
        )
    finally:
        con.close()
    return path


def set_members(con, users: list[str]) -> None:
    con.execute("delete from cohorts.cart_abandoners_24h")
    for user in users:
        con.execute("insert into cohorts.cart_abandoners_24h values (?, ?)", [user, ENTERED])


def change_members(path: Path, users: list[str]) -> None:
    con = wh.connect(path)
    try:
        set_members(con, users)
    finally:
        con.close()


def materialize(project, name: str, path: Path, **config) -> dg.ExecuteInProcessResult:
    [asset] = [a for a in project.sync_assets if a.key.path[-1] == name]
    run_config = {"ops": {asset.op.name: {"config": config}}} if config else None
    return dg.materialize(
        [asset], resources={"warehouse": WarehouseResource(path=str(path))}, run_config=run_config, raise_on_error=False
    )


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == REJECTED_SHARE_CHECK
    return evaluation


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    return event.step_failure_data.error.message


def csv_members(path: Path) -> set[str]:
    with path.open(newline="") as handle:
        return {row["user_id"] for row in csv.DictReader(handle)}


def test_a_file_sync_materialises_its_counts_and_passes_its_check(project, warehouse: Path) -> None:
    first = materialize(project, "cart_abandoners_24h_to_files", warehouse)
    assert first.success
    meta = metadata(first)
    assert (meta["status"], meta["rows_added"], meta["rows_removed"], meta["audience_size"], meta["paused"]) == (
        "succeeded", 3, 0, 3, False,
    )
    assert check(first).passed
    exported = warehouse.parent / "destinations" / "cart_abandoners_24h_to_files.csv"
    assert csv_members(exported) == {"u1", "u2", "u3"}

    change_members(warehouse, ["u2", "u3", "u4"])
    second = metadata(materialize(project, "cart_abandoners_24h_to_files", warehouse))
    assert (second["rows_added"], second["rows_removed"], second["rows_unchanged"]) == (1, 1, 2)
    assert second["sample_added"] == ["u4"] and second["sample_removed"] == ["u1"]
    assert csv_members(exported) == {"u2", "u3", "u4"}


def test_a_dry_run_sends_nothing(project, warehouse: Path) -> None:
    result = materialize(project, "cart_abandoners_24h_to_files", warehouse, dry_run=True)
    assert result.success
    assert (metadata(result)["status"], metadata(result)["rows_added"]) == ("dry_run", 3)
    assert not (warehouse.parent / "destinations" / "cart_abandoners_24h_to_files.csv").exists()


def test_a_failed_sync_fails_its_run_with_the_reason(project, warehouse: Path) -> None:
    # repeat_buyers_90d was never built in this warehouse.
    result = materialize(project, "repeat_buyers_90d_to_files", warehouse)
    assert not result.success
    assert "cohorts.repeat_buyers_90d" in failure_message(result)
    assert "does not exist" in failure_message(result)
    assert result.get_asset_materialization_events() == []
    con = wh.connect(warehouse, read_only=True)
    try:
        [(status, error)] = con.execute(
            "select status, error from cohortflow_syncs.sync_runs where sync_name = 'repeat_buyers_90d_to_files'"
        ).fetchall()
    finally:
        con.close()
    assert status == "failed" and "does not exist" in error


def test_the_webhook_sync_sends_consented_members_to_a_receiver(project, warehouse: Path, monkeypatch) -> None:
    with WebhookEmulator(secret=SECRET) as receiver:
        url = receiver.url + "/cohortflow/webhook"
        monkeypatch.setenv("COHORTFLOW_WEBHOOK_URL", url)
        monkeypatch.setenv("COHORTFLOW_WEBHOOK_SECRET", SECRET)
        result = materialize(project, "cart_abandoners_24h_to_webhook", warehouse)
        assert result.success, failure_message(result)
        # u3 has no marketing consent: never sent.
        assert set(receiver.members("cart_abandoners_24h_to_webhook")) == {"u1", "u2"}
        assert receiver.signature_failures == 0
    meta = metadata(result)
    assert (meta["rows_added"], meta["rows_excluded_consent"], meta["destination"]) == (2, 1, url)
    assert check(result).passed


def test_a_webhook_that_refuses_the_request_fails_the_run_without_leaking_the_secret(project, warehouse: Path, monkeypatch) -> None:
    with WebhookEmulator(secret="the-receivers-secret") as receiver:
        monkeypatch.setenv("COHORTFLOW_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("COHORTFLOW_WEBHOOK_SECRET", SECRET)
        result = materialize(project, "cart_abandoners_24h_to_webhook", warehouse)
        assert receiver.members("cart_abandoners_24h_to_webhook") == {}
    assert not result.success
    message = failure_message(result)
    assert "401" in message and SECRET not in message


def test_a_paused_sync_materialises_as_paused_and_sends_nothing(project, warehouse: Path) -> None:
    control = pytest.importorskip("reverse_etl.control")
    con = wh.connect(warehouse)
    try:
        control.pause_sync(con, "cart_abandoners_24h_to_files", reason="campaign on hold")
    finally:
        con.close()
    result = materialize(project, "cart_abandoners_24h_to_files", warehouse)
    assert result.success
    meta = metadata(result)
    assert (meta["status"], meta["paused"], meta["rows_added"]) == ("paused", True, 0)
    assert check(result).passed
    assert not (warehouse.parent / "destinations" / "cart_abandoners_24h_to_files.csv").exists()


def result_with(rejected: int, processed: int) -> SyncResult:
    return SyncResult(
        run_id="r", sync_name="s", status="succeeded", mode=SyncMode.MIRROR, dry_run=False, full_resync=False,
        destination_location="x", destination_kind="webhook", started_at=ENTERED, finished_at=ENTERED,
        rows_processed=processed, rows_added=processed - rejected, rows_rejected=rejected,
    )


@pytest.mark.parametrize("rejected, processed, passed", [(0, 0, True), (1, 100, True), (1, 20, True), (2, 20, False)])
def test_the_rejected_share_check_holds_the_declared_limit(project, rejected: int, processed: int, passed: bool) -> None:
    [declaration] = [d for d in project.sync_declarations if d.spec.name == "cart_abandoners_24h_to_files"]
    assert declaration.max_rejected_share == 0.05  # the default
    evaluation = rejected_share_check(declaration, result_with(rejected, processed))
    assert evaluation.passed is passed
    assert evaluation.metadata["rows_rejected"].value == rejected
