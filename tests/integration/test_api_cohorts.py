"""The Cohort API against a real `cohortflow serve` on 127.0.0.1, reading what a real pipeline published.

A small generated warehouse (its events end an hour ago) is run once; the server answers from its
snapshot. Listing and downloads are compared with the warehouse; every refusal is checked for its
status, the field it names, and that nothing landed. Then an uploaded cohort goes the whole way: upload
and membership changes → `cohortflow run` (pipeline.run_pipeline, in this process, while the server
keeps serving) → marts.cohorts and marts.cohort_memberships → the API, the Profile API, a download →
a cohort condition (in_uploaded_cohort, rendered by dbt against the warehouse) → the Parquet file the
shipped sync writes; then members removed / added and a list replaced, and the next run follows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
from api_server import ApiServer, auth
from generated_warehouse import load_generated

from cohortflow.dbt_manifest import dbt_executable
from cohortflow.warehouse import DBT_PROJECT_DIR

pytestmark = pytest.mark.slow  # three pipeline runs on 400 users (~70 s each)

MAX_UPLOAD_IDS = 500
MAX_REQUEST_BYTES = 64 * 1024
UPLOAD_SYNC = "uploaded_cohorts_to_parquet"


class CohortApiServer(ApiServer):
    """The test server, with small upload limits in its serving.yml."""

    def env(self) -> dict[str, str]:
        env = super().env()
        config = Path(env["COHORTFLOW_SERVING_CONFIG"])
        config.write_text(config.read_text() + f"max_upload_ids: {MAX_UPLOAD_IDS}\nmax_request_bytes: {MAX_REQUEST_BYTES}\n")
        return env


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warehouse after one pipeline run (as of now; its events end an hour ago), with the
    environment `cohortflow run` uses set for this module, restored afterwards."""
    from cohortflow.pipeline import run_pipeline

    base = tmp_path_factory.mktemp("cohort_api_world")
    warehouse = base / "warehouse" / "world.duckdb"
    warehouse.parent.mkdir()
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    saved = {k: os.environ.get(k) for k in ("COHORTFLOW_WAREHOUSE", "DAGSTER_HOME", "DBT_SEND_ANONYMOUS_USAGE_STATS")}
    os.environ.update({"COHORTFLOW_WAREHOUSE": str(warehouse), "DAGSTER_HOME": str(home),
                       "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    try:
        end = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) - timedelta(hours=1)
        load_generated(warehouse, base / "data", users=400, days=60, seed=11, end=end)
        run_pipeline(None, skip_predictions=True)  # no uploads yet: the run must work without any
        yield warehouse
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def server(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with CohortApiServer(world, tmp_path_factory.mktemp("cohort_api_server")) as running:
        yield running


def rows(warehouse: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def get(server: ApiServer, path: str, key: str = "admin", **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", params=params, headers=auth(key), timeout=30)


def post(server: ApiServer, path: str, body: Any, key: str = "admin", **kwargs: Any) -> httpx.Response:
    if "content" in kwargs:
        return httpx.post(f"{server.url}{path}", headers={**auth(key), "Content-Type": "application/json"}, timeout=60, **kwargs)
    return httpx.post(f"{server.url}{path}", json=body, headers=auth(key), timeout=60)


def landed(warehouse: Path) -> list[str]:
    """Every file under the API's landing folder for cohorts (temporary ones included)."""
    folder = warehouse.parent / "landing" / "cohorts"
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def download(server: ApiServer, cohort_id: str, **params: Any) -> tuple[httpx.Response, dict[str, Any]]:
    """Request → poll the status until it is done → the file."""
    requested = get(server, f"/api/5/cohorts/request/{cohort_id}", **params)
    assert requested.status_code == 202, requested.text
    request_id = requested.json()["request_id"]
    deadline = time.monotonic() + 60
    while True:
        status = get(server, f"/api/5/cohorts/request-status/{request_id}")
        assert status.status_code in (200, 202), status.text
        if status.json()["async_status"] != "JOB INPROGRESS":
            break
        assert status.status_code == 202 and time.monotonic() < deadline
        time.sleep(0.05)
    assert status.status_code == 200 and status.json()["async_status"] == "JOB COMPLETED", status.text
    file = get(server, f"/api/5/cohorts/request/{request_id}/file")
    assert file.status_code == 200, file.text
    return file, status.json()


def wait_for_snapshot(server: ApiServer, previous: str, timeout: float = 30) -> dict[str, Any]:
    """The API's freshness once it serves a snapshot other than ``previous``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        freshness = get(server, "/api/3/cohorts").json()["freshness"]
        if freshness["snapshot_id"] != previous:
            return freshness
        time.sleep(0.1)
    raise AssertionError(f"the server still serves snapshot {previous} after {timeout} s")


# --- listing ---------------------------------------------------------------------------------------


def test_the_list_is_the_registry_with_definitions_and_syncs(server: ApiServer, world: Path) -> None:
    answer = get(server, "/api/3/cohorts")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    registry = {cohort_id: (name, kind, size) for cohort_id, name, kind, size in
                rows(world, "select cohort_id, cohort_name, kind, size from marts.cohorts")}
    listed = {c["id"]: c for c in body["cohorts"]}
    assert {i: (c["name"], c["kind"], c["size"]) for i, c in listed.items()} == registry
    assert body["freshness"]["snapshot_id"] == answer.headers["X-Cohortflow-Snapshot"]
    assert body["freshness"]["data_age_seconds"] >= 0

    cart = listed["cart_abandoners_24h"]
    assert cart["is_predictive"] is False and cart["is_uploaded"] is False and cart["owners"] == [cart["owner"]]
    clauses = cart["definition"]["andClauses"]
    assert [c["orClauses"][0]["type"] for c in clauses] == ["performed", "performed"] and clauses[1]["negated"] is True
    assert {"name": "cart_abandoners_24h_to_files", "destination": "local_files", "destination_type": "csv",
            "cadence": "hourly"} in cart["syncs"]
    assert isinstance(cart["last_computed"], int) and cart["data_as_of"].endswith("Z")
    assert listed["likely_buyers_7d"]["is_predictive"] is True and listed["likely_buyers_7d"]["kind"] == "predictive"
    assert listed["lapsing_users"]["syncs"] == []

    one = get(server, "/api/3/cohorts/cart_abandoners_24h")
    assert one.status_code == 200 and one.json()["cohort"] == cart


def test_reading_cohorts_needs_a_key_with_the_scope(server: ApiServer) -> None:
    missing = httpx.get(f"{server.url}/api/3/cohorts", timeout=10)
    assert missing.status_code == 401 and "Api-Key" in missing.json()["error"]
    assert get(server, "/api/3/cohorts", key="events").status_code == 403
    assert get(server, "/api/5/cohorts/request/cart_abandoners_24h", key="profiles").status_code == 403
    assert post(server, "/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": ["a"]}, key="cohorts").status_code == 403


def test_an_unknown_cohort_is_a_404_naming_it(server: ApiServer) -> None:
    answer = get(server, "/api/3/cohorts/cart_abandoners_42h")
    assert answer.status_code == 404
    assert answer.json() == {"error": "No cohort with id 'cart_abandoners_42h' (did you mean 'cart_abandoners_24h'?)",
                             "parameter": "cohort_id"}
    assert get(server, "/api/5/cohorts/request/nope").status_code == 404


# --- downloads -------------------------------------------------------------------------------------


def test_download_csv_with_chosen_properties(server: ApiServer, world: Path) -> None:
    file, status = download(server, "repeat_buyers_90d", props=1, prop_keys="country,order_count,has_marketing_consent")
    expected = {user: (country or "", str(orders), "true" if consent else "false") for user, country, orders, consent in rows(
        world,
        "select m.user_id, p.country, p.order_count, p.has_marketing_consent from marts.cohort_memberships m "
        "join marts.user_properties p using (user_id) where m.cohort_id = 'repeat_buyers_90d'",
    )}
    assert file.headers["content-type"].startswith("text/csv")
    assert "attachment" in file.headers["content-disposition"]
    assert file.headers["X-Cohortflow-Snapshot"] == status["freshness"]["snapshot_id"]
    table = list(csv.DictReader(io.StringIO(file.text)))
    assert list(table[0]) == ["user_id", "entered_at", "country", "order_count", "has_marketing_consent"]
    assert {r["user_id"]: (r["country"], r["order_count"], r["has_marketing_consent"]) for r in table} == expected
    assert len(expected) > 10 and status["rows"] == len(expected) and status["prop_keys"] == ["country", "order_count", "has_marketing_consent"]


def test_download_json_with_and_without_properties(server: ApiServer, world: Path) -> None:
    members = {u for (u,) in rows(world, "select user_id from marts.cohort_memberships where cohort_id = 'cart_abandoners_24h'")}
    plain, _ = download(server, "cart_abandoners_24h", format="json")
    records = json.loads(plain.text)
    assert {r["user_id"] for r in records} == members and len(records) == len(members) > 0
    assert set(records[0]) == {"user_id", "entered_at"} and records[0]["entered_at"].endswith("Z")

    every, status = download(server, "cart_abandoners_24h", format="json", props=1)
    record = json.loads(every.text)[0]
    assert "favourite_category" in record["properties"] and "email" in record["properties"]
    assert status["props"] is True and set(status["prop_keys"]) == set(record["properties"])

    # An empty cohort (predictions are not scored in this world) is an empty array.
    (nobody,) = rows(world, "select cohort_id from marts.cohorts where size = 0 order by cohort_id limit 1")[0]
    empty, _ = download(server, nobody, format="json")
    assert json.loads(empty.text) == []


def test_download_refusals(server: ApiServer) -> None:
    unknown = get(server, "/api/5/cohorts/request/repeat_buyers_90d", props=1, prop_keys="country,ordr_count,colour")
    assert unknown.status_code == 400
    assert unknown.json()["parameter"] == "prop_keys" and unknown.json()["unknown"] == ["ordr_count", "colour"]
    assert "'ordr_count', 'colour'" in unknown.json()["error"] and "did you mean 'order_count'" in unknown.json()["error"]
    amplitude_spelling = get(server, "/api/5/cohorts/request/repeat_buyers_90d", props=1, propKeys="nope")
    assert amplitude_spelling.status_code == 400 and amplitude_spelling.json()["parameter"] == "propKeys"
    without_props = get(server, "/api/5/cohorts/request/repeat_buyers_90d", prop_keys="country")
    assert without_props.status_code == 400 and without_props.json()["parameter"] == "prop_keys"
    for params, parameter in (({"format": "xml"}, "format"), ({"props": 2}, "props")):
        refused = get(server, "/api/5/cohorts/request/repeat_buyers_90d", **params)
        assert refused.status_code == 422 and refused.json()["parameter"] == parameter, refused.text

    for request_id in ("0" * 32, "../../etc/passwd", "abc' or 1=1 --"):
        for path in (f"/api/5/cohorts/request-status/{request_id}", f"/api/5/cohorts/request/{request_id}/file"):
            answer = httpx.get(f"{server.url}{path}", headers=auth(), timeout=10)
            assert answer.status_code == 404, (path, answer.text)
            assert "/" not in answer.json()["error"].replace("request-status", "")
    # A request id is only good for the key that asked.
    requested = get(server, "/api/5/cohorts/request/repeat_buyers_90d")
    other = get(server, f"/api/5/cohorts/request-status/{requested.json()['request_id']}", key="cohorts")
    assert other.status_code == 404


# --- uploads: refusals write nothing ----------------------------------------------------------------


def test_refused_uploads_and_changes_write_nothing(server: ApiServer, world: Path) -> None:
    before = landed(world)
    cases: list[tuple[str, Any, int, str]] = [
        ("/api/3/cohorts/upload", {"id_type": "BY_USER_ID", "ids": ["a"]}, 400, "name"),
        ("/api/3/cohorts/upload", {"name": "  ", "id_type": "BY_USER_ID", "ids": ["a"]}, 400, "name"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": ["a"], "description": "nul\u0000"}, 400, "description"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_AMP_ID", "ids": ["1"]}, 400, "id_type"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_EMAIL", "ids": ["a"]}, 400, "id_type"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": []}, 400, "ids"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": "user-1"}, 400, "ids"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": ["", None, 3]}, 400, "ids"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": ["a"], "colour": 1}, 400, "colour"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": ["a"], "existing_cohort_id": "cart_abandoners_24h"}, 409, "existing_cohort_id"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": ["a"], "existing_cohort_id": "no_such_list"}, 404, "existing_cohort_id"),
        ("/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": [f"u{i}" for i in range(MAX_UPLOAD_IDS + 1)]}, 413, "ids"),
        ("/api/3/cohorts/membership", {"cohort_id": "cart_abandoners_24h", "memberships": [{"ids": ["a"], "operation": "ADD"}]}, 409, "cohort_id"),
        ("/api/3/cohorts/membership", {"cohort_id": "no_such_list", "memberships": [{"ids": ["a"], "operation": "ADD"}]}, 404, "cohort_id"),
        ("/api/3/cohorts/membership", {"cohort_id": "no_such_list", "memberships": [{"ids": ["a"], "operation": "MERGE"}]}, 400, "memberships.0.operation"),
        ("/api/3/cohorts/membership", {"cohort_id": "no_such_list", "memberships": []}, 400, "memberships"),
        ("/api/3/cohorts/membership", {"cohort_id": "no_such_list", "memberships": [{"ids": ["a"], "operation": "ADD", "id_type": "BY_AMP_ID"}]}, 400, "memberships.0.id_type"),
    ]
    for path, body, status, parameter in cases:
        answer = post(server, path, body)
        assert (answer.status_code, answer.json().get("parameter")) == (status, parameter), (body, answer.text)
        assert answer.json()["error"]
    all_invalid = post(server, "/api/3/cohorts/upload", {"name": "x", "id_type": "BY_USER_ID", "ids": ["", None, 3]}).json()
    assert all_invalid["invalid"] == 3 and [s["reason"] for s in all_invalid["invalid_sample"]] == ["empty", "null", "not a string (int)"]

    too_big = post(server, "/api/3/cohorts/upload", None,
                   content=json.dumps({"name": "big", "id_type": "BY_USER_ID", "ids": ["x" * 200] * 400}).encode())
    assert too_big.status_code == 413 and too_big.json()["parameter"] == "body", too_big.text
    not_json = post(server, "/api/3/cohorts/upload", None, content=b"{'name': 'x'")
    assert not_json.status_code == 400 and not_json.json()["parameter"] == "body"
    assert landed(world) == before


# --- uploads: the whole way -------------------------------------------------------------------------


def show_cohort(warehouse: Path, scratch: Path, conditions: str) -> set[str]:
    """Members of an inline cohort (the project's cohort() macro) rendered and run by dbt on the warehouse."""
    result = subprocess.run(
        [dbt_executable(), "show", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
         "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs"),
         "--vars", json.dumps({"warehouse": str(warehouse)}),
         "--inline", f"{{{{ cohort(all_of=[{conditions}]) }}}}", "--limit", "-1", "--output", "json", "--quiet"],
        capture_output=True, text=True, env={**os.environ, "COHORTFLOW_WAREHOUSE": str(warehouse)}, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {row["user_id"] for row in json.loads(result.stdout)["show"]}


def parquet_members(warehouse: Path) -> dict[str, set[str]]:
    table = pq.read_table(warehouse.parent / "destinations" / f"{UPLOAD_SYNC}.parquet").to_pylist()
    found: dict[str, set[str]] = {}
    for row in table:
        found.setdefault(row["cohort_id"], set()).add(row["user_id"])
    return found


def members(warehouse: Path, cohort_id: str) -> set[str]:
    return {u for (u,) in rows(warehouse, "select user_id from marts.cohort_memberships where cohort_id = ?", [cohort_id])}


def test_an_uploaded_cohort_becomes_a_cohort_like_any_other(server: ApiServer, world: Path, tmp_path: Path) -> None:
    from cohortflow.pipeline import run_pipeline

    buyers = [u for (u,) in rows(world, "select distinct user_id from raw.events where event_type = 'purchase' order by 1 limit 4")]
    browsers = [u for (u,) in rows(
        world, "select user_id from raw.events where user_id is not null group by user_id "
               "having count(*) filter (where event_type = 'purchase') = 0 order by 1 limit 4")]
    assert len(buyers) == len(browsers) == 4
    known = buyers[:3] + browsers[:3]

    # Upload: six known users, one not known yet, three invalid ids, two repeats.
    upload = post(server, "/api/3/cohorts/upload", {
        "name": "VIP list — Q4", "id_type": "BY_USER_ID", "description": "From the CRM", "owner": "crm-team",
        "ids": [*known, "future_user_1", known[0], "", 7, "x" * 256, known[1]],
    })
    assert upload.status_code == 200, upload.text
    answer = upload.json()
    vip = answer["cohort_id"]
    assert vip.startswith("vip_list_q4_")
    assert {k: answer[k] for k in ("received", "matched", "unmatched", "invalid", "duplicates", "replaced")} == {
        "received": 12, "matched": 6, "unmatched": 1, "invalid": 3, "duplicates": 2, "replaced": False}
    assert answer["invalid_sample"] == [{"id": "", "reason": "empty"}, {"id": "7", "reason": "not a string (int)"},
                                        {"id": "x" * 77 + "...", "reason": "longer than 255 characters"}]
    assert answer["freshness"]["snapshot_id"]

    # Members change before the next run: added, then removed and re-added in order.
    change = post(server, "/api/3/cohorts/membership", {"cohort_id": vip, "memberships": [
        {"ids": [buyers[3], browsers[3]], "operation": "ADD", "id_type": "BY_USER_ID"},
        {"ids": [known[0], browsers[3], "bad\nid"], "operation": "REMOVE"},
        {"ids": [browsers[3]], "operation": "ADD"},
    ]})
    assert change.status_code == 200, change.text
    results = change.json()["memberships_result"]
    assert [(r["operation"], r["accepted"], r["matched"], r["invalid"]) for r in results] == [
        ("ADD", 2, 2, 0), ("REMOVE", 2, 2, 1), ("ADD", 1, 1, 0)]
    assert results[1]["skipped_ids"] == ["bad\\u000aid"]
    strict = post(server, "/api/3/cohorts/membership", {"cohort_id": vip, "skip_invalid_ids": False,
                                                       "memberships": [{"ids": [known[1], ""], "operation": "REMOVE"}]})
    assert strict.status_code == 400 and strict.json()["parameter"] == "memberships.0.ids"

    # A second uploaded cohort, replaced before the run: only the replacement counts.
    swap = post(server, "/api/3/cohorts/upload", {"name": "Swap", "id_type": "BY_USER_ID", "ids": buyers[:2]}).json()["cohort_id"]
    replaced = post(server, "/api/3/cohorts/upload", {"name": "Swap (new)", "id_type": "BY_USER_ID", "ids": browsers[:2],
                                                      "existing_cohort_id": swap})
    assert replaced.status_code == 200 and replaced.json()["replaced"] is True and replaced.json()["cohort_id"] == swap

    files = [f for f in landed(world) if f.endswith(".json") and "/" not in f]
    assert len(files) == 4 and not [f for f in landed(world) if ".tmp" in f]
    # Not applied until the pipeline runs.
    assert get(server, f"/api/3/cohorts/{vip}").status_code == 404
    snapshot_before = get(server, "/api/3/cohorts").json()["freshness"]["snapshot_id"]

    # A run computes as of its start, to the second: a change counts in runs as of a moment after it.
    time.sleep(1.1)
    run_pipeline(None, skip_predictions=True)

    expected = {*known[1:], buyers[3], browsers[3]}
    assert members(world, vip) == expected  # future_user_1 is not a user (yet)
    assert members(world, swap) == set(browsers[:2])
    (registry,) = rows(world, "select cohort_name, kind, owner, description, size, model_name, definition "
                              "from marts.cohorts where cohort_id = ?", [vip])
    assert registry == ("VIP list — Q4", "uploaded", "crm-team", "From the CRM", 7, "uploaded_cohort_memberships", None)
    assert not landed(world) or all(f.startswith(("ingested/", "registry/")) for f in landed(world))

    # The shipped sync delivered both uploaded cohorts.
    assert parquet_members(world) == {vip: expected, swap: set(browsers[:2])}

    # The API switched to the new snapshot without a restart.
    wait_for_snapshot(server, snapshot_before)
    listed = get(server, f"/api/3/cohorts/{vip}").json()["cohort"]
    assert (listed["kind"], listed["is_uploaded"], listed["size"], listed["definition"], listed["owners"]) == (
        "uploaded", True, 7, None, ["crm-team"])
    assert {"name": UPLOAD_SYNC, "destination": "local_parquet", "destination_type": "parquet", "cadence": "hourly"} in listed["syncs"]
    profile = get(server, "/v1/userprofile", user_id=buyers[3], get_cohort_ids="true")
    assert profile.status_code == 200 and vip in profile.json()["userData"]["cohort_ids"]
    file, _ = download(server, vip, format="csv")
    assert {r["user_id"] for r in csv.DictReader(io.StringIO(file.text))} == expected

    # Usable in another cohort's conditions: the uploaded members who bought, and the buyers who are not in it.
    assert show_cohort(world, tmp_path, f"in_uploaded_cohort('{vip}'), performed('purchase')") == expected & set(buyers)
    outside = show_cohort(world, tmp_path, f"performed('purchase'), not_in_uploaded_cohort('{vip}')")
    assert buyers[0] in outside and not outside & expected

    # Changes after the run (the cohort is in the snapshot now), and the next run follows.
    later = post(server, "/api/3/cohorts/membership", {"cohort_id": vip, "memberships": [
        {"ids": [known[1], known[2]], "operation": "REMOVE"}, {"ids": [buyers[0]], "operation": "ADD"}]})
    assert later.status_code == 200, later.text
    snapshot_before = get(server, "/api/3/cohorts").json()["freshness"]["snapshot_id"]
    time.sleep(1.1)
    summary = run_pipeline(None, skip_predictions=True)

    expected = (expected - {known[1], known[2]}) | {buyers[0]}
    assert members(world, vip) == expected
    assert parquet_members(world)[vip] == expected
    sync = {s.name: s.metadata for s in summary.syncs}[UPLOAD_SYNC]
    assert (sync["rows_added"], sync["rows_removed"]) == (1, 2)
    wait_for_snapshot(server, snapshot_before)
    assert get(server, f"/api/3/cohorts/{vip}").json()["cohort"]["size"] == len(expected)
