"""A replay after a lost answer sends exactly the bytes first sent under its key, over real HTTP.

The receiver is the webhook emulator on 127.0.0.1, which refuses (422) a message_id that comes back
with another body, as receivers following "same key, same request" do (the HTTP Idempotency-Key
draft, Stripe). Before, a replay dropped the records whose plan had changed since, so its body
differed from the first one under the same key (10 of 65 and 46 of 49 replays in the independent
check); such a receiver refused it, the engine split it, and records ended up refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from reverse_etl import SyncSpec, TransientDestinationError, run_sync
from reverse_etl.destinations.webhook import WebhookDestination
from reverse_etl.emulators.webhook import WebhookEmulator
from reverse_etl.http import HttpConfig

SECRET = "replay-test-secret"
T0 = datetime(2026, 3, 1, 12, 0)
NAME = "vip_webhook"


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("create schema c")
    # Every kind of value a cohort or a property model ships: money as an exact decimal, times,
    # dates, lists, text with quotes and non-ASCII, booleans, NULLs, doubles that do not round-trip
    # through a careless float formatting.
    connection.execute(
        """
        create table c.vip as select
            'u' || lpad(i::varchar, 3, '0') as user_id,
            (i * 10.1)::decimal(18, 2) as lifetime_revenue,
            timestamp '2026-02-01 08:30:00.123456' + i * interval 1 hour as entered_at,
            date '2026-01-01' + i::integer as first_seen_on,
            ['shoes', 'bags', 'x"y'][1 + i % 3:] as categories,
            case when i % 4 = 0 then null else 'Ünïcode "quoted" ' || i end as note,
            i % 2 = 0 as has_marketing_consent,
            i / 3.0 + 0.1 as score
        from range(25) t(i)
        """
    )
    connection.execute("create table c.consent as select user_id, true as has_marketing_consent from c.vip")
    yield connection
    connection.close()


def destination(url: str) -> WebhookDestination:
    # One attempt: a lost answer fails the run at once (the next run must finish the job).
    config = HttpConfig(connect_timeout=1.0, read_timeout=0.5, max_attempts=1, max_requests_per_second=0)
    return WebhookDestination(url + "/hook", secret=SECRET, http=config, max_batch_size=100)


def spec(**overrides: object) -> SyncSpec:
    values: dict[str, object] = {
        "name": NAME, "source_relation": "c.vip", "primary_key": ["user_id"], "batch_size": 10,
        "identifiers": {"user_id": "user_id"},
    }
    values.update(overrides)
    return SyncSpec(**values)  # type: ignore[arg-type]


def bodies(receiver: WebhookEmulator) -> list[tuple[str, bytes]]:
    return [(r.json()["message_id"], r.body) for r in receiver.batch_requests()]


def test_a_replay_carries_the_first_bytes_and_changes_follow_under_new_keys(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with WebhookEmulator(secret=SECRET) as receiver:
        receiver.inject("ok", "drop_after")  # batch 2 is applied, its answer never comes
        with pytest.raises(TransientDestinationError):
            run_sync(con, spec(), destination(receiver.url), lock_dir=tmp_path, now=T0)
        (first_key, _), (lost_key, lost_body) = bodies(receiver)[:2]
        # Since then, records of the lost batch changed, left, and a new one joined.
        con.execute("update c.vip set lifetime_revenue = 999.99, categories = ['new'] where user_id = 'u012'")
        con.execute("delete from c.vip where user_id in ('u015', 'u016')")
        con.execute("insert into c.vip select 'u900', 1.00, timestamp '2026-03-01', date '2026-03-01', [], null, true, 0.5")
        before = len(receiver.requests)
        second = run_sync(con, spec(), destination(receiver.url), lock_dir=tmp_path, now=T0 + timedelta(hours=1))
        later = [(r.json()["message_id"], r.body) for r in receiver.requests[before:]]

        assert second.status == "succeeded" and receiver.key_conflicts == []
        assert later[0] == (lost_key, lost_body)  # the same request, byte for byte, first
        assert later[1][0] != lost_key and first_key not in {key for key, _ in later}
        resent = {u["user_id"] for _, body in later[1:] for u in json.loads(body)["users"]}
        # After the replays: the change, the removes and the newcomer, each under a new key.
        assert {"u012", "u015", "u016", "u900"} <= resent
        members = receiver.members(NAME)
        audience = {row[0] for row in con.execute("select user_id from c.vip").fetchall()}
        assert set(members) == audience
        assert members["u012"]["lifetime_revenue"] == 999.99 and members["u012"]["categories"] == ["new"]


def test_a_batch_with_a_user_who_lost_consent_is_not_replayed_and_never_sends_them_again(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    consented = spec(consent_relation="c.consent", consent_column="has_marketing_consent")
    with WebhookEmulator(secret=SECRET) as receiver:
        receiver.inject("drop_before")  # batch 1 never arrives
        with pytest.raises(TransientDestinationError):
            run_sync(con, consented, destination(receiver.url), lock_dir=tmp_path, now=T0)
        lost_key = bodies(receiver)[0][0] if receiver.batch_requests() else None
        con.execute("update c.consent set has_marketing_consent = false where user_id = 'u003'")  # in the lost batch
        before = len(receiver.requests)
        result = run_sync(con, consented, destination(receiver.url), lock_dir=tmp_path, now=T0 + timedelta(hours=1))
        later = [r.json() for r in receiver.requests[before:]]
        assert result.status == "succeeded" and result.rows_replayed == 15 and receiver.key_conflicts == []
        # Batch 1 held u003: its records went out again under new keys, batches 2 and 3 were replayed.
        assert all(payload["message_id"] != lost_key for payload in later)
        # u003's data is never sent again; since batch 1 may have arrived, it is removed (in_cohort false).
        assert not [p for p in later if p["in_cohort"] and any(u["user_id"] == "u003" for u in p["users"])]
        assert [u["user_id"] for p in later if not p["in_cohort"] for u in p["users"]] == ["u003"]
        assert "u003" not in receiver.members(NAME) and len(receiver.members(NAME)) == 24
        assert con.execute(
            "select count(*) from cohortflow_syncs.sync_records where run_id = ? and delivery = 'in_doubt'", [result.run_id]
        ).fetchone() == (10,)  # the nine others sent anew, and the remove of u003
