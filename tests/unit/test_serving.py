"""The serving layer's plain parts: serving.yml, keys, and publishing / switching snapshots."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import duckdb
import pytest

from cohortflow.declarations import DeclarationError
from cohortflow.serving.auth import KeyRing
from cohortflow.serving.errors import ApiError
from cohortflow.serving.settings import Scope, load_settings, read_serving_file
from cohortflow.serving.snapshot import POINTER, SnapshotStore, publish_snapshot


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_keys_come_from_the_environment_and_only_their_hashes_are_kept(tmp_path: Path) -> None:
    config = write(tmp_path / "serving.yml", """
api_keys:
  - name: crm
    key_env: CRM_KEY
    scopes: [read:profiles]
  - name: offline
    key_sha256: %s
    scopes: [write:events]
    rate_limit: 10/second
  - name: unset
    key_env: NOT_SET_ANYWHERE
    scopes: [read:cohorts]
""" % hashlib.sha256(b"offline-secret").hexdigest())
    settings = load_settings(tmp_path / "w.duckdb", config=config, environ={"CRM_KEY": "crm-secret"})
    assert [k.name for k in settings.keys] == ["crm", "offline"]
    assert settings.disabled_keys == ("unset (set NOT_SET_ANYWHERE)",)
    assert "crm-secret" not in repr(settings) and "offline-secret" not in repr(settings)
    ring = KeyRing(settings)
    assert ring.find("crm-secret").scopes == frozenset({Scope.READ_PROFILES})
    assert ring.find("offline-secret").name == "offline"
    assert ring.find("crm-secre") is None and ring.find("") is None
    assert settings.landing_dir == tmp_path / "landing" and settings.serving_dir == tmp_path / "serving"


@pytest.mark.parametrize(
    "text, message",
    [
        ("api_keys:\n  - name: a\n    key_env: A\n    scope: [read:profiles]\n", "did you mean 'scopes'"),
        ("api_keys:\n  - name: a\n    key_env: A\n    scopes: [read:profile]\n", "read:profile"),
        ("api_keys:\n  - name: a\n    scopes: [read:profiles]\n", "exactly one of key_env"),
        ("api_keys:\n  - name: a\n    key_env: A\n    key_sha256: %s\n    scopes: [read:profiles]\n" % ("ab" * 32),
         "exactly one of key_env"),
        ("api_keys:\n  - name: a\n    key_sha256: abc\n    scopes: [read:profiles]\n", "64 hex digits"),
        ("api_keys:\n  - name: a\n    key_env: A\n    scopes: [read:profiles]\n    rate_limit: lots\n", "600/minute"),
        ("api_keys:\n  - name: a\n    key_env: A\n    scopes: [read:profiles]\n"
         "  - name: a\n    key_env: B\n    scopes: [read:profiles]\n", "declared twice"),
        ("api_keys: [\n", "not valid YAML"),
    ],
)
def test_a_bad_serving_file_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DeclarationError) as raised:
        read_serving_file(write(tmp_path / "serving.yml", text))
    assert message in str(raised.value) and "serving.yml" in str(raised.value)


def test_rate_limit_refuses_with_retry_after(tmp_path: Path) -> None:
    config = write(tmp_path / "serving.yml", "api_keys:\n  - name: a\n    key_env: A\n    scopes: [read:profiles]\n"
                   "    rate_limit: 3/minute\n")
    ring = KeyRing(load_settings(tmp_path / "w.duckdb", config=config, environ={"A": "secret"}))
    key = ring.find("secret")
    for _ in range(3):
        ring.charge(key)
    with pytest.raises(ApiError) as raised:
        ring.charge(key)
    assert raised.value.status == 429 and 1 <= int(raised.value.headers["Retry-After"]) <= 60


def planted_warehouse(path: Path, *, email: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("create schema if not exists marts")
    con.execute("create or replace table marts.user_properties as select * from (values "
                f"('u1', '{email}', 3, 12.50::decimal(38,6), timestamp '2026-11-01 00:00:00'), "
                "('u2', null, 0, 0::decimal(38,6), timestamp '2026-11-01 00:00:00')) "
                "t(user_id, email, order_count, revenue_lifetime, computed_at)")
    con.execute("create or replace table marts.cohort_memberships as select * from (values "
                "('buyers', 'u1', timestamp '2026-10-01'), ('all', 'u1', timestamp '2026-10-01'), ('all', 'u2', timestamp '2026-10-02')) "
                "t(cohort_id, user_id, entered_at)")
    con.execute("create or replace table marts.cohorts as select * from (values "
                "('buyers', 'Buyers', 'bought', 'behavioural', 'me', 1::bigint, timestamp '2026-11-01', 'buyers_model', '{}'), "
                "('all', 'All', 'everyone', 'behavioural', 'me', 2::bigint, timestamp '2026-11-01', 'all_model', null)) "
                "t(cohort_id, cohort_name, description, kind, owner, size, computed_at, model_name, definition)")
    return con


def test_a_published_snapshot_serves_what_the_warehouse_held_and_the_store_switches(tmp_path: Path) -> None:
    con = planted_warehouse(tmp_path / "w.duckdb", email="a@example.org")
    serving = tmp_path / "serving"
    first = publish_snapshot(con, serving, attributes=["email"],
                             syncs={"buyers_model": [{"name": "s", "destination": "d", "destination_type": "csv", "cadence": "hourly"}]},
                             keep=2)
    assert first.rows["users"] == 2 and first.rows["cohort_members"] == 3
    store = SnapshotStore(serving, poll_seconds=0)
    snapshot = store.current()
    assert snapshot.id == first.id and snapshot.as_of.isoformat() == "2026-11-01T00:00:00+00:00"
    amp, computed, cohorts = snapshot.db.execute("select amp_props, computations, cohort_ids from users where user_id = 'u1'").fetchone()
    assert json.loads(amp) == {"email": "a@example.org"}
    assert json.loads(computed) == {"order_count": 3, "revenue_lifetime": 12.5}
    assert json.loads(cohorts) == ["all", "buyers"]
    assert json.loads(snapshot.db.execute("select syncs from cohorts where cohort_id = 'buyers'").fetchone()[0])[0]["name"] == "s"

    planted_warehouse(tmp_path / "w.duckdb", email="b@example.org")  # the same connection sees the change
    second = publish_snapshot(con, serving, attributes=["email"], keep=2)
    assert store.current().id == second.id
    assert json.loads(store.current().db.execute("select amp_props from users where user_id = 'u1'").fetchone()[0]) == {
        "email": "b@example.org"}
    # the old snapshot object still reads its own file
    assert json.loads(snapshot.db.execute("select amp_props from users where user_id = 'u1'").fetchone()[0]) == {
        "email": "a@example.org"}
    third = publish_snapshot(con, serving, attributes=["email"], keep=2)
    files = sorted(p.name for p in (serving / "snapshots").iterdir())
    assert files == sorted([f"{second.id}.sqlite", f"{third.id}.sqlite"])
    assert json.loads((serving / POINTER).read_text())["snapshot_id"] == third.id


def test_no_snapshot_is_a_503_and_a_broken_pointer_keeps_the_current_one(tmp_path: Path) -> None:
    serving = tmp_path / "serving"
    store = SnapshotStore(serving, poll_seconds=0)
    with pytest.raises(ApiError) as raised:
        store.current()
    assert raised.value.status == 503
    con = planted_warehouse(tmp_path / "w.duckdb", email="a@example.org")
    published = publish_snapshot(con, serving, attributes=["email"])
    assert store.current().id == published.id
    (serving / POINTER).write_text(json.dumps({"file": "snapshots/gone.sqlite"}))
    os.utime(serving / POINTER, ns=(1, 1))
    assert store.current().id == published.id


def test_publishing_refuses_a_warehouse_without_the_models(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    with pytest.raises(RuntimeError, match="run the dbt models"):
        publish_snapshot(con, tmp_path / "serving")
