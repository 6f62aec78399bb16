"""The Profile API against a real `cohortflow serve` on 127.0.0.1, reading a real pipeline's snapshot."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import duckdb
import httpx
import pytest
from api_server import ApiServer, auth, copy_world

from cohortflow.serving.snapshot import POINTER, publish_snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(served_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with ApiServer(served_world, tmp_path_factory.mktemp("profiles_server")) as running:
        yield running


@pytest.fixture(scope="module")
def snapshot_db(served_world: Path) -> Iterator[sqlite3.Connection]:
    pointer = json.loads((served_world.parent / "serving" / POINTER).read_text())
    con = sqlite3.connect(served_world.parent / "serving" / pointer["file"])
    yield con
    con.close()


def warehouse_rows(warehouse: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def profile(server: ApiServer, key: str = "admin", **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/userprofile", params=params, headers=auth(key), timeout=10)


def test_a_full_profile_matches_the_warehouse(server: ApiServer, served_world: Path) -> None:
    user_id, = warehouse_rows(
        served_world,
        "select user_id from marts.predictions p join marts.recommendations r using (user_id) "
        "where p.prediction_id = 'purchase_7d' order by user_id limit 1",
    )[0]
    answer = profile(server, user_id=user_id, get_amp_props="true", get_computations="true", get_cohort_ids="true",
                     get_recs="true", rec_id="products_for_you", get_propensity="true",
                     prediction_id="purchase_7d,churn_30d", propensity_type="score")
    assert answer.status_code == 200, answer.text
    data = answer.json()["userData"]
    assert data["user_id"] == user_id
    email, country, orders, revenue = warehouse_rows(
        served_world, "select email, country, order_count, revenue_lifetime from marts.user_properties where user_id = ?",
        [user_id])[0]
    assert data["amp_props"]["email"] == email and data["amp_props"]["country"] == country
    assert data["computations"]["order_count"] == orders
    assert data["computations"]["revenue_lifetime"] == pytest.approx(float(revenue))
    assert "email" not in data["computations"]
    cohorts = sorted(r[0] for r in warehouse_rows(
        served_world, "select cohort_id from marts.cohort_memberships where user_id = ?", [user_id]))
    assert data["cohort_ids"] == cohorts
    items = [r[0] for r in warehouse_rows(
        served_world, "select item_id from marts.recommendations where user_id = ? and rec_id = 'products_for_you' "
        "order by rank", [user_id])]
    [rec] = data["recommendations"]
    assert rec["rec_id"] == "products_for_you" and rec["items"] == items
    assert isinstance(rec["is_control"], bool) and rec["last_updated"] > 0
    scores = dict(warehouse_rows(
        served_world, "select prediction_id, probability from marts.predictions where user_id = ?", [user_id]))
    got = {p["pred_id"]: p["prop"] for p in data["propensities"]}
    assert got == pytest.approx({k: scores[k] for k in ("purchase_7d", "churn_30d") if k in scores})
    assert all(p["prop_type"] == "score" for p in data["propensities"])
    freshness = answer.json()["freshness"]
    assert answer.headers["X-Cohortflow-Snapshot"] == freshness["snapshot_id"]
    as_of, = warehouse_rows(served_world, "select max(computed_at) from marts.user_properties")[0]
    assert freshness["data_as_of"] == as_of.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_percentiles_and_what_was_not_asked_is_null(server: ApiServer, served_world: Path) -> None:
    user_id, percentile = warehouse_rows(
        served_world, "select user_id, percentile from marts.predictions where prediction_id = 'churn_30d' "
        "order by percentile desc, user_id limit 1")[0]
    data = profile(server, user_id=user_id, get_propensity="true", prediction_id="churn_30d",
                   propensity_type="pct").json()["userData"]
    assert data["propensities"] == [
        {"prop": percentile, "pred_id": "churn_30d", "prop_type": "pct", "model_version": data["propensities"][0]["model_version"],
         "data_as_of": data["propensities"][0]["data_as_of"]}
    ]
    assert data["amp_props"] is None and data["cohort_ids"] is None and data["recommendations"] is None


def test_a_control_user_is_marked(server: ApiServer, served_world: Path) -> None:
    rows = warehouse_rows(served_world, "select user_id from marts.recommendations where is_control limit 1")
    assert rows, "the world's recommendation has a control group"
    data = profile(server, user_id=rows[0][0], get_recs="true", rec_id="products_for_you").json()["userData"]
    assert data["recommendations"][0]["is_control"] is True


def test_device_id_finds_the_devices_user(server: ApiServer, snapshot_db: sqlite3.Connection) -> None:
    device_id, user_id = snapshot_db.execute("select device_id, user_id from devices limit 1").fetchone()
    data = profile(server, device_id=device_id, get_cohort_ids="true").json()["userData"]
    assert data["user_id"] == user_id and data["device_id"] == device_id


@pytest.mark.parametrize(
    "params, status, parameter",
    [
        ({}, 400, "user_id"),
        ({"user_id": "a", "device_id": "b"}, 400, "user_id"),
        ({"user_id": "user-000001", "get_recs": "true"}, 400, "rec_id"),
        ({"user_id": "user-000001", "get_recs": "true", "rec_id": "product_for_you"}, 400, "rec_id"),
        ({"user_id": "user-000001", "get_propensity": "true", "prediction_id": "purchase_7"}, 400, "prediction_id"),
        ({"user_id": "user-000001", "get_propensity": "true", "prediction_id": "purchase_7d", "propensity_type": "raw"},
         422, "propensity_type"),
        ({"user_id": "user-000001", "get_amp_props": "perhaps"}, 422, "get_amp_props"),
        ({"user_id": "x" * 300}, 422, "user_id"),
    ],
)
def test_bad_input_is_refused_naming_the_parameter(server: ApiServer, params: dict, status: int, parameter: str) -> None:
    answer = profile(server, **params)
    assert answer.status_code == status, answer.text
    assert answer.json()["parameter"] == parameter and parameter in answer.json()["error"]


def test_did_you_mean_on_a_misspelt_recommendation(server: ApiServer) -> None:
    answer = profile(server, user_id="user-000001", get_recs="true", rec_id="product_for_you")
    assert "did you mean 'products_for_you'" in answer.json()["error"]


@pytest.mark.parametrize("user_id", ["nobody", "' or '1'='1", "user-000001' --", "../../../etc/passwd", "%00", "🙂"])
def test_unknown_users_and_hostile_ids_are_404_without_leaking(server: ApiServer, user_id: str) -> None:
    answer = profile(server, user_id=user_id, get_amp_props="true")
    assert answer.status_code == 404
    assert answer.json() == {"error": "User not found"}


def test_keys_scopes_and_their_error_bodies(server: ApiServer) -> None:
    url = f"{server.url}/v1/userprofile?user_id=user-000001"
    missing = httpx.get(url)
    assert missing.status_code == 401 and "Missing API key" in missing.json()["error"]
    wrong = httpx.get(url, headers={"Authorization": "Api-Key not-a-key"})
    assert wrong.status_code == 401 and wrong.json() == {"error": "Invalid API key"}
    malformed = httpx.get(url, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert malformed.status_code == 401
    no_scope = httpx.get(url, headers=auth("events"))
    assert no_scope.status_code == 403 and "read:profiles" in no_scope.json()["error"]
    bearer = httpx.get(url, headers={"Authorization": f"Bearer {auth('profiles')['Authorization'].split()[1]}"})
    assert bearer.status_code == 200
    for answer in (missing, wrong, no_scope):
        assert not any(leak in answer.text for leak in ("Traceback", ".py", "select ", "test-"))


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(server: ApiServer) -> None:
    answers = [profile(server, key="slow", user_id="user-000001") for _ in range(7)]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    limited = answers[5]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["code"] == 429
    # Other keys are not affected.
    assert profile(server, key="profiles", user_id="user-000001").status_code == 200


def test_unknown_paths_and_methods_answer_json(server: ApiServer) -> None:
    answer = httpx.get(f"{server.url}/v1/nothing-here", headers=auth())
    assert answer.status_code == 404 and "error" in answer.json()
    answer = httpx.delete(f"{server.url}/v1/userprofile", headers=auth())
    assert answer.status_code == 405 and "error" in answer.json()


def test_openapi_docs_are_served(server: ApiServer) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/userprofile" in schema["paths"]
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_the_api_switches_snapshots_under_load_without_a_failed_or_mixed_answer(
    served_world: Path, tmp_path: Path
) -> None:
    """Two kinds of snapshot alternate while clients read: in one, email is an attribute; in the other
    a computed property. Every answer must come whole from one of them (its id says which)."""
    warehouse = copy_world(served_world, tmp_path / "world")
    serving = warehouse.parent / "serving"
    kinds: dict[str, str] = {}
    con = duckdb.connect(str(warehouse), read_only=True)

    def publish(kind: str) -> None:
        published = publish_snapshot(con, serving, attributes=["email", "country"] if kind == "split" else [], keep=3)
        kinds[published.id] = kind

    publish("split")
    answers: list[tuple[int, str, dict]] = []
    failures: list[str] = []
    stop = threading.Event()
    with ApiServer(warehouse, tmp_path / "server") as server:

        def read() -> None:
            with httpx.Client(base_url=server.url, headers=auth(), timeout=10) as client:
                while not stop.is_set():
                    try:
                        answer = client.get("/v1/userprofile", params={
                            "user_id": "user-000002", "get_amp_props": "true", "get_computations": "true"})
                    except httpx.HTTPError as error:  # a refused or dropped connection is a failure too
                        failures.append(repr(error))
                        continue
                    answers.append((answer.status_code, answer.headers.get("X-Cohortflow-Snapshot", ""), answer.json()))

        readers = [threading.Thread(target=read) for _ in range(4)]
        for reader in readers:
            reader.start()
        for round_ in range(8):
            publish("merged" if round_ % 2 == 0 else "split")
            stop.wait(0.4)
        stop.set()
        for reader in readers:
            reader.join()
    con.close()

    assert not failures
    assert answers and all(status == 200 for status, _, _ in answers), Counter(s for s, _, _ in answers)
    seen = Counter()
    for _, header_id, body in answers:
        assert body["freshness"]["snapshot_id"] == header_id
        kind = kinds[header_id]
        seen[kind] += 1
        data = body["userData"]
        if kind == "split":
            assert "email" in data["amp_props"] and "email" not in data["computations"]
        else:
            assert data["amp_props"] == {} and "email" in data["computations"]
    assert seen["split"] and seen["merged"], seen
    assert len({h for _, h, _ in answers}) >= 3  # it really switched, more than once
    assert len(list((serving / "snapshots").glob("*.sqlite"))) == 3  # older snapshots are removed


def test_without_a_published_snapshot_answers_are_503(tmp_path: Path) -> None:
    warehouse = tmp_path / "empty" / "w.duckdb"
    warehouse.parent.mkdir()
    with ApiServer(warehouse, tmp_path / "server") as server:
        answer = httpx.get(f"{server.url}/v1/userprofile?user_id=u", headers=auth())
        assert answer.status_code == 503 and "cohortflow run" in answer.json()["error"]
        assert httpx.get(f"{server.url}/health").status_code == 503
