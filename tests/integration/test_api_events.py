"""The event endpoint against a real `cohortflow serve` on 127.0.0.1: Amplitude's answers, events landed
durably and ingested once (also when the server is SIGKILLed mid-stream), and the wiring that brings
them into the next run (`cohortflow run`, the raw/events asset, the every-minute schedule).
"""

from __future__ import annotations

import gzip
import random
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import duckdb
import httpx
import orjson
import pytest
from api_server import KEYS, ApiServer, auth, copy_world

from cohortflow.ingest.landing import BATCHES_FOLDER, events_dir, has_landed, ingest_landed, landing_dir_for

ADMIN = KEYS["admin"][0]
EVENTS_KEY = KEYS["events"][0]
PROFILES_KEY = KEYS["profiles"][0]
THROTTLED_KEY = "test-events-throttled-0123456789"
SERVER_KEYS = {**KEYS, "events_throttled": (THROTTLED_KEY, ["write:events"], "3/minute")}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_event(n: int, **changes: Any) -> dict[str, Any]:
    e = {"user_id": f"api-user-{n:05d}", "event_type": "view_item", "time": now_ms() - 60_000,
         "insert_id": f"api-{n}", "event_properties": {"item_id": f"item-{n % 50}", "price": 9.5}}
    e.update(changes)
    return e


def post(server: ApiServer, body: Any, *, headers: dict[str, str] | None = None, content: bytes | None = None,
         timeout: float = 30) -> httpx.Response:
    data = content if content is not None else orjson.dumps(body)
    return httpx.post(f"{server.url}/2/httpapi", content=data,
                      headers={"Content-Type": "application/json", **(headers or {})}, timeout=timeout)


def landed_files(warehouse: Path) -> list[Path]:
    folder = events_dir(landing_dir_for(warehouse))
    return sorted(p for p in folder.glob("*.jsonl")) if folder.exists() else []


def rows(warehouse: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    base = tmp_path_factory.mktemp("events_server")
    warehouse = base / "warehouse" / "events.duckdb"
    warehouse.parent.mkdir()
    with ApiServer(warehouse, base / "server", keys=SERVER_KEYS) as running:
        yield running


def test_posted_events_are_acknowledged_like_amplitude_and_ingested_once(server: ApiServer) -> None:
    before = now_ms()
    events = [make_event(1), make_event(2, event_type="add_to_cart"), make_event(3, insert_id=None)]
    body = orjson.dumps({"api_key": EVENTS_KEY, "events": events})
    answer = post(server, None, content=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    reply = answer.json()
    assert set(reply) == {"code", "events_ingested", "payload_size_bytes", "server_upload_time"}
    assert (reply["code"], reply["events_ingested"], reply["payload_size_bytes"]) == (200, 3, len(body))
    assert before <= reply["server_upload_time"] <= now_ms()
    # The key in the header instead of the body; the same insert_id again (a retry); gzip.
    assert post(server, {"events": [make_event(4)]}, headers=auth("events")).status_code == 200
    assert post(server, {"api_key": EVENTS_KEY, "events": [make_event(1, event_type="retried")]}).status_code == 200
    zipped = gzip.compress(orjson.dumps({"api_key": ADMIN, "events": [make_event(5)]}))
    assert post(server, None, content=zipped, headers={"Content-Encoding": "gzip"}).status_code == 200
    assert len(landed_files(server.warehouse)) == 4

    result = ingest_landed(server.warehouse)
    assert (result.requests, result.rows_read, result.rows_loaded, result.rows_duplicate) == (4, 6, 5, 1)
    assert not landed_files(server.warehouse)
    got = rows(server.warehouse, "select coalesce(insert_id, '-'), event_type, user_id from raw.events order by user_id")
    assert got == [("api-1", "view_item", "api-user-00001"), ("api-2", "add_to_cart", "api-user-00002"),
                   ("-", "view_item", "api-user-00003"), ("api-4", "view_item", "api-user-00004"),
                   ("api-5", "view_item", "api-user-00005")]
    # Posting an insert_id that is already in the warehouse, and ingesting again: still once.
    assert post(server, {"api_key": EVENTS_KEY, "events": [make_event(2)]}).status_code == 200
    assert ingest_landed(server.warehouse).rows_duplicate == 1
    assert rows(server.warehouse, "select count(*) from raw.events where insert_id = 'api-2'") == [(1,)]


@pytest.mark.parametrize("body, headers, status, expected", [
    ({"events": [make_event(1)]}, {}, 400, {"code": 400, "missing_field": "api_key"}),
    ({"api_key": "", "events": [make_event(1)]}, {}, 400, {"code": 400, "missing_field": "api_key"}),
    ({"api_key": 5, "events": [make_event(1)]}, {}, 400, {"code": 400, "missing_field": None}),
    ({"api_key": "not-a-key", "events": [make_event(1)]}, {}, 401, {"error": "Invalid API key"}),
    ({"events": [make_event(1)]}, {"Authorization": "Api-Key not-a-key"}, 401, {"error": "Invalid API key"}),
    ({"api_key": PROFILES_KEY, "events": [make_event(1)]}, {}, 403,
     {"error": "This API key does not have the scope write:events"}),
    ({"api_key": EVENTS_KEY}, {}, 400, {"code": 400, "missing_field": "events"}),
    ({"api_key": EVENTS_KEY, "events": []}, {}, 400, {"code": 400, "missing_field": "events"}),
    ({"api_key": EVENTS_KEY, "events": [make_event(1)] * 2001}, {}, 413, {"code": 413}),
])
def test_request_errors_have_amplitudes_shapes_and_land_nothing(server: ApiServer, body: dict, headers: dict,
                                                                status: int, expected: dict) -> None:
    before = landed_files(server.warehouse)
    answer = post(server, body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    reply = answer.json()
    assert {k: reply.get(k) for k in expected} == expected
    assert isinstance(reply["error"], str) and "Traceback" not in answer.text and str(server.warehouse) not in answer.text
    if status == 401:
        assert answer.headers["www-authenticate"] == "Api-Key"
    assert landed_files(server.warehouse) == before


def test_invalid_events_are_listed_by_index_with_ingests_reasons_and_nothing_is_accepted(server: ApiServer) -> None:
    before = landed_files(server.warehouse)
    events = [make_event(10), make_event(11, user_id="abc"), make_event(12, event_type=None),
              make_event(13, time="tomorrow"), "not an event", make_event(15, event_properties=[1])]
    answer = post(server, {"api_key": EVENTS_KEY, "events": events})
    assert answer.status_code == 400
    reply = answer.json()
    assert reply["code"] == 400 and reply["missing_field"] is None
    assert reply["events_with_invalid_fields"] == {"user_id": [1], "time": [3], "event": [4], "event_properties": [5]}
    assert reply["events_with_missing_fields"] == {"event_type": [2]}
    assert [(e["index"], e["reason"]) for e in reply["event_errors"]] == [
        (1, "id_too_short"), (2, "missing_event_type"), (3, "invalid_time"), (4, "not_an_object"), (5, "properties_not_object")]
    assert reply["event_errors"][2]["detail"] == (
        "time 'tomorrow' is not a time (epoch ms, ISO-8601 or the mapping's time_format)")
    assert landed_files(server.warehouse) == before
    # The client drops the listed events and sends the rest: accepted.
    rest = [e for i, e in enumerate(events) if i not in {e["index"] for e in reply["event_errors"]}]
    assert post(server, {"api_key": EVENTS_KEY, "events": rest}).json()["events_ingested"] == 1


def test_odd_bodies_are_400_413_or_415_never_500(server: ApiServer) -> None:
    key = {"Authorization": f"Api-Key {EVENTS_KEY}"}
    cases = [
        (b"", 400), (b"{", 400), (b"[]", 400), (b"null", 400), (b'{"events": "x"}', 400),
        (b"\xef\xbb\xbf" + orjson.dumps({"events": [make_event(20)]}), 200),  # a byte-order mark is skipped
        (b'{"events": [' + b"[" * 5000 + b"]" * 5000 + b"]}", 400),
        (b'{"events": [{"user_id": "\xff\xfe\xfd", "event_type": "x"}]}', 400),
        (b'{"api_key": "' + b"k" * 100 + b'", "events": [' + b" " * (1024 * 1024) + b"]}", 413),
    ]
    for content, status in cases:
        answer = post(server, None, content=content, headers=key)
        assert answer.status_code == status, (content[:60], answer.text)
        assert "code" in answer.json()
    assert post(server, None, content=b"{}", headers={**key, "Content-Encoding": "br"}).status_code == 415
    assert post(server, None, content=b"{}", headers={**key, "Content-Encoding": "gzip"}).status_code == 400
    assert httpx.get(f"{server.url}/2/httpapi", timeout=10).status_code == 405


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(server: ApiServer) -> None:
    body = {"api_key": THROTTLED_KEY, "events": [make_event(30)]}
    statuses = [post(server, body).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    answer = post(server, body)
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
    assert answer.json()["code"] == 429


def test_the_endpoint_is_in_the_openapi_schema(server: ApiServer) -> None:
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    operation = schema["paths"]["/2/httpapi"]["post"]
    assert {"200", "400", "401", "403", "413", "429"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["events"]["maxItems"] == 2000


# --- SIGKILL ---------------------------------------------------------------------------------------


def test_nothing_acknowledged_is_lost_when_the_server_is_killed(tmp_path: Path) -> None:
    """Post in a loop, SIGKILL the server at random moments (three times); then every acknowledged
    event is in the warehouse after the ingest, exactly once, and no request is in it by halves."""
    warehouse = tmp_path / "warehouse" / "killed.duckdb"
    warehouse.parent.mkdir()
    acknowledged: set[int] = set()
    sent: set[int] = set()
    per_request = 500
    counter = iter(range(1_000_000))
    rng = random.Random(12)

    for round_ in range(3):
        running = ApiServer(warehouse, tmp_path / "server", keys=SERVER_KEYS).start()
        stop = threading.Event()

        def poster() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    request = next(counter)
                    events = [make_event(i, insert_id=f"r{request}-{i}", user_id=f"killed-{request:06d}")
                              for i in range(per_request)]
                    sent.add(request)
                    try:
                        answer = client.post(f"{running.url}/2/httpapi",
                                             content=orjson.dumps({"api_key": EVENTS_KEY, "events": events}))
                    except httpx.HTTPError:
                        return  # the server is gone
                    assert answer.status_code == 200, answer.text
                    acknowledged.add(request)

        threads = [threading.Thread(target=poster) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.8, 1.6))
        running.kill()  # SIGKILL: no shutdown, no flush
        stop.set()
        for thread in threads:
            thread.join(30)
        if round_ == 1:
            # An ingest between two crashes, while nothing is posting.
            ingest_landed(warehouse)

    assert len(acknowledged) >= 6, "the server acknowledged too little to test anything"
    assert len(sent) > len(acknowledged)  # requests were in flight when the server died
    ingest_landed(warehouse)
    assert not has_landed(landing_dir_for(warehouse))
    counts: dict[int, int] = defaultdict(int)
    duplicates = rows(warehouse, "select count(*) - count(distinct event_id) from raw.events")[0][0]
    for user_id, n in rows(warehouse, "select user_id, count(*) from raw.events group by 1"):
        counts[int(user_id.split("-")[1])] = n
    assert duplicates == 0
    missing = sorted(r for r in acknowledged if counts.get(r) != per_request)
    assert missing == [], f"acknowledged requests not (fully) ingested: {missing[:10]}"
    halves = {r: n for r, n in counts.items() if n != per_request}
    assert halves == {}, f"requests ingested in part: {halves}"
    assert set(counts) <= sent  # and unacknowledged ones are either whole or absent
    assert not list((events_dir(landing_dir_for(warehouse)) / BATCHES_FOLDER).iterdir())


# --- into the next run -------------------------------------------------------------------------------


@pytest.fixture
def definitions(dbt_manifest: Path):
    from orchestration import definitions

    return definitions


def test_raw_events_is_a_real_asset_upstream_of_staging_in_every_refresh(definitions) -> None:
    defs = definitions.defs
    graph = defs.resolve_asset_graph()
    raw_events = graph.get(dg.AssetKey(["raw", "events"]))
    assert raw_events.is_materializable and raw_events.group_name == "raw"
    assert dg.AssetKey(["staging", "stg_events"]) in raw_events.child_keys
    for job in ("cohortflow_job", "events_every_minute"):
        assert raw_events.key in defs.resolve_job_def(job).asset_layer.selected_asset_keys, job
    assert raw_events.key in definitions.HOURLY_SELECTION
    minute = set(defs.resolve_job_def("events_every_minute").asset_layer.selected_asset_keys)
    assert dg.AssetKey(["marts", "cohort_memberships"]) in minute
    assert not any(k.path[0] in ("predictions", "recommendations") for k in minute)
    schedule = defs.resolve_schedule_def("events_every_minute_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == ("* * * * *", "UTC", "events_every_minute")
    assert defs.resolve_job_def("events_every_minute").tags.get("cohortflow/warehouse") == "duckdb"


def test_the_every_minute_schedule_runs_only_when_events_landed(definitions, tmp_path: Path, monkeypatch) -> None:
    warehouse = tmp_path / "w.duckdb"
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", str(warehouse))
    schedule = definitions.defs.resolve_schedule_def("events_every_minute_schedule")
    tick = datetime(2026, 3, 1, 12, 7, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            result = schedule.evaluate_tick(context)
        assert not result.run_requests and "no events landed" in result.skip_message

        from cohortflow.ingest.landing import write_landed

        write_landed(landing_dir_for(warehouse), [orjson.dumps(make_event(1))], {"id": "t"})
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            [request] = schedule.evaluate_tick(context).run_requests
        assert request.run_key == "2026-03-01 12:07:00"
        assert request.run_config["ops"]["cohortflow_dbt_models"]["config"]["as_of"] == "2026-03-01 12:07:00"

        run = instance.create_run_for_job(definitions.defs.resolve_job_def("events_every_minute"),
                                          status=dg.DagsterRunStatus.NOT_STARTED)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            result = schedule.evaluate_tick(context)
        assert not result.run_requests and run.run_id in result.skip_message


def test_materialising_raw_events_ingests_what_was_landed(definitions, tmp_path: Path) -> None:
    from cohortflow.ingest.landing import write_landed
    from orchestration.resources import WarehouseResource

    warehouse = tmp_path / "w.duckdb"
    write_landed(landing_dir_for(warehouse), [orjson.dumps(make_event(i)) for i in range(3)], {"id": "t"})
    with dg.instance_for_test() as instance:
        result = dg.materialize([definitions.landed_events_asset], instance=instance,
                                resources={"warehouse": WarehouseResource(path=str(warehouse))})
    assert result.success
    [materialization] = result.asset_materializations_for_node(definitions.landed_events_asset.op.name)
    assert materialization.metadata["rows_loaded"].value == 3
    assert rows(warehouse, "select count(*) from raw.events") == [(3,)]


@pytest.mark.slow
def test_cohortflow_run_ingests_posted_events_once_and_they_reach_a_cohort(served_world: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:
    """Posted through a real server, picked up by `cohortflow run`: raw.events once, the cohort built on it."""
    from cohortflow.pipeline import run_pipeline

    warehouse = copy_world(served_world, tmp_path / "world")
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", str(warehouse))
    last = rows(warehouse, "select max(event_time) from raw.events")[0][0]
    as_of = last.replace(tzinfo=timezone.utc)
    at = int(as_of.timestamp() * 1000) - 3_600_000  # an hour before the run's as_of
    newcomer = "api-newcomer-0001"
    events = [{"user_id": newcomer, "event_type": "add_to_cart", "time": at, "insert_id": "cart-1",
               "event_properties": {"item_id": "SKU-1", "price": 12.5, "quantity": 1}}]
    with ApiServer(warehouse, tmp_path / "server") as running:
        for _ in range(2):  # a client retry: the same insert_id twice
            assert post(running, {"api_key": EVENTS_KEY, "events": events}).status_code == 200
    summary = run_pipeline(as_of.replace(tzinfo=None), skip_predictions=True)
    assert summary.landed_events and summary.landed_events["rows_loaded"] == 1
    assert summary.landed_events["rows_duplicate"] == 1
    assert "landed events (POST /2/httpapi): 2 request(s)" in summary.format_text()
    assert rows(warehouse, "select count(*) from raw.events where user_id = ?", [newcomer]) == [(1,)]
    assert rows(warehouse, "select count(*) from cohorts.cart_abandoners_24h where user_id = ?", [newcomer]) == [(1,)]
    assert not landed_files(warehouse)
