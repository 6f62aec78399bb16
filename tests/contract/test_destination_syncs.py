"""Every HTTP destination end to end: ``run_sync`` from an in-memory DuckDB warehouse to its emulator.

Each case checks what a user of the sync would check: after each run the destination holds exactly
the consenting audience; a run that fails half-way on a flaky destination is finished by the next
run without losing a record or committing one twice except under the same idempotency key; records
the destination refuses or skips are reported and not sent again until they change; secrets do not
end up in the run log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from contract_helpers import FakeClock, fake_options, fast_config

from reverse_etl import SyncError, SyncSpec, run_sync
from reverse_etl.destinations.base import RecordDestination
from reverse_etl.destinations.braze import BrazeDestination
from reverse_etl.destinations.facebook import FacebookCustomAudienceDestination
from reverse_etl.destinations.hubspot import HubSpotContactsDestination
from reverse_etl.destinations.klaviyo import KlaviyoProfilesDestination
from reverse_etl.destinations.webhook import WebhookDestination
from reverse_etl.emulators.base import Emulator, Faults
from reverse_etl.emulators.braze import BrazeEmulator
from reverse_etl.emulators.facebook import FacebookEmulator
from reverse_etl.emulators.hubspot import HubSpotEmulator
from reverse_etl.emulators.klaviyo import KlaviyoEmulator
from reverse_etl.emulators.webhook import WebhookEmulator

SECRET = "e2e-secret-value-7f3a9c"
AUDIENCE_ID = "23850000000000042"
T0 = datetime(2026, 3, 1, 12, 0, 0)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def email_of(user: str) -> str:
    return f"{user}@example.com"


@dataclass
class Case:
    """One destination: its emulator, how to build it, the sync, and what the emulator holds."""

    name: str
    emulator: Callable[[str], Emulator]
    destination: Callable[[Emulator, str], RecordDestination]
    identifiers: dict[str, str]
    holds: Callable[[Emulator, str], dict[str, Any]]  # user_id -> the ltv it holds, for members only

    def spec(self, *, name: str | None = None) -> SyncSpec:
        return SyncSpec(
            name=name or f"vip_to_{self.name}", source_relation="cohorts.vip_buyers", primary_key=["user_id"],
            fields={"user_id": "user_id", "ltv": "ltv"}, identifiers=self.identifiers, mode="mirror", batch_size=4,
            consent_relation="people.consent",
        )


def _sender(emulator: Emulator) -> dict[str, Any]:
    return {"http": fast_config(read_timeout=0.25, max_attempts=3), "sender_options": fake_options(FakeClock())}


def _webhook_holds(em: Emulator, sync: str) -> dict[str, Any]:
    assert isinstance(em, WebhookEmulator)
    return {user: props["ltv"] for user, props in em.members(sync).items()}


def _braze_holds(em: Emulator, sync: str) -> dict[str, Any]:
    assert isinstance(em, BrazeEmulator)
    with em.lock:
        return {user: attrs.get("ltv") for user, attrs in em.users.items() if attrs.get(f"in_{sync}") is True}


def _facebook_holds(em: Emulator, sync: str) -> dict[str, Any]:
    assert isinstance(em, FacebookEmulator)
    by_hash = {sha(email_of(f"u{i:02d}")): f"u{i:02d}" for i in range(100)}
    return {by_hash[h]: None for h in em.hashes(AUDIENCE_ID, "EMAIL_SHA256")}


def _hubspot_holds(em: Emulator, sync: str) -> dict[str, Any]:
    assert isinstance(em, HubSpotEmulator)
    with em.lock:
        return {c["user_id"]: float(c["ltv"]) for c in em.contacts.values() if c.get(f"in_{sync}") == "true"}


def _klaviyo_holds(em: Emulator, sync: str) -> dict[str, Any]:
    assert isinstance(em, KlaviyoEmulator)
    with em.lock:
        return {p["external_id"]: p["properties"].get("ltv") for p in em.profiles.values() if p["properties"].get(f"in_{sync}") is True}


CASES = [
    Case(
        "webhook",
        lambda sync: WebhookEmulator(secret=SECRET),
        lambda em, sync: WebhookDestination(em.url + "/hooks", secret=SECRET, **_sender(em)),
        {"user_id": "user_id"},
        _webhook_holds,
    ),
    Case(
        "braze",
        lambda sync: BrazeEmulator(api_key=SECRET, membership_attribute=f"in_{sync}"),
        lambda em, sync: BrazeDestination(em.url, api_key=SECRET, **_sender(em)),
        {"user_id": "user_id", "email": "email"},
        _braze_holds,
    ),
    Case(
        "facebook",
        lambda sync: FacebookEmulator(access_token=SECRET, audience_ids=[AUDIENCE_ID]),
        lambda em, sync: FacebookCustomAudienceDestination(AUDIENCE_ID, access_token=SECRET, base_url=em.url,
                                                           default_country_code="81", **_sender(em)),
        {"email": "email", "phone": "phone"},
        _facebook_holds,
    ),
    Case(
        "hubspot",
        lambda sync: HubSpotEmulator(access_token=SECRET, membership_property=f"in_{sync}"),
        lambda em, sync: HubSpotContactsDestination(access_token=SECRET, base_url=em.url, user_id_property="user_id", **_sender(em)),
        {"email": "email"},
        _hubspot_holds,
    ),
    Case(
        "klaviyo",
        lambda sync: KlaviyoEmulator(api_key=SECRET, membership_property=f"in_{sync}", polls_to_complete=1),
        lambda em, sync: KlaviyoProfilesDestination(api_key=SECRET, base_url=em.url, poll_interval=0, **_sender(em)),
        {"user_id": "user_id", "email": "email"},
        _klaviyo_holds,
    ),
]
IDS = [c.name for c in CASES]


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("create schema cohorts; create schema people")
    connection.execute(
        "create table cohorts.vip_buyers as select 'u' || lpad(i::varchar, 2, '0') as user_id, "
        "'u' || lpad(i::varchar, 2, '0') || '@example.com' as email, '090-0000-' || lpad(i::varchar, 4, '0') as phone, "
        "(i * 10 + 0.5)::double as ltv from range(12) t(i)"
    )
    # u05 never consented: never sent anywhere.
    connection.execute(
        "create table people.consent as select user_id, user_id <> 'u05' as has_marketing_consent from cohorts.vip_buyers"
    )
    yield connection
    connection.close()


def audience(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    rows = con.execute(
        "select v.user_id, v.ltv from cohorts.vip_buyers v join people.consent c using (user_id) where c.has_marketing_consent"
    ).fetchall()
    return dict(rows)


def churn(con: duckdb.DuckDBPyConnection, step: int) -> None:
    """Two leave, one changes, two join, one withdraws consent."""
    base = 12 + 2 * step
    con.execute(f"delete from cohorts.vip_buyers where user_id in ('u{2 * step:02d}', 'u{2 * step + 1:02d}')")
    con.execute(f"update cohorts.vip_buyers set ltv = ltv + 1000 where user_id = 'u{2 * step + 2:02d}'")
    for i in (base, base + 1):
        con.execute("insert into cohorts.vip_buyers values (?, ?, ?, ?)", [f"u{i:02d}", email_of(f"u{i:02d}"), f"090-0000-{i:04d}", i * 10 + 0.5])
        con.execute("insert into people.consent values (?, true)", [f"u{i:02d}"])
    con.execute(f"update people.consent set has_marketing_consent = false where user_id = 'u{2 * step + 3:02d}'")


def expected_holds(case: Case, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    wanted = audience(con)
    return {u: None for u in wanted} if case.name == "facebook" else wanted


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_destination_follows_the_consenting_audience_run_after_run(case: Case, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    spec = case.spec()
    with case.emulator(spec.name) as em:
        dest = case.destination(em, spec.name)
        first = run_sync(con, spec, dest, now=T0, lock_dir=tmp_path)
        assert first.status == "succeeded" and first.rows_added == 11 and first.rows_excluded_consent == 1
        assert case.holds(em, spec.name) == expected_holds(case, con)
        assert "u05" not in case.holds(em, spec.name)

        churn(con, 0)
        second = run_sync(con, spec, dest, now=T0 + timedelta(hours=1), lock_dir=tmp_path)
        assert second.status == "succeeded"
        assert (second.rows_added, second.rows_changed, second.rows_removed) == (2, 1, 3)
        assert case.holds(em, spec.name) == expected_holds(case, con)

        committed = len(em.committed())
        third = run_sync(con, spec, dest, now=T0 + timedelta(hours=2), lock_dir=tmp_path)
        assert third.rows_processed == 0 and len(em.committed()) == committed  # nothing changed, nothing sent
        # Every batch request carried an idempotency key.
        assert all(r.header("idempotency-key") for r in em.batch_requests())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_flaky_destination_loses_nothing_and_applies_each_batch_once(
    case: Case, con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    spec = case.spec()
    faults = Faults(seed=11, server_error=0.2, throttle=0.1, drop_before=0.1, drop_after=0.15, timeout=0.05,
                    retry_after=0.01, timeout_delay=0.5)
    with case.emulator(spec.name) as em:
        dest = case.destination(em, spec.name)
        em.faults = faults
        failures = 0
        for step in range(3):
            if step:
                churn(con, step - 1)
            start = len(em.deliveries)
            for attempt in range(12):
                try:
                    result = run_sync(con, spec, dest, now=T0 + timedelta(hours=step, minutes=attempt), lock_dir=tmp_path)
                except SyncError as exc:
                    failures += 1
                    assert exc.result is not None and exc.result.status == "failed"
                    assert SECRET not in str(exc) and SECRET not in (exc.result.error or "")
                    continue
                assert result.status == "succeeded"
                break
            else:
                pytest.fail(f"{case.name}: step {step} never succeeded in 12 runs")
            assert case.holds(em, spec.name) == expected_holds(case, con)
            # Within a step each (operation, record) is committed once: a repeat came under the
            # key of the first delivery and was answered as a replay.
            counts: dict[tuple[str, str], int] = {}
            for delivery in em.deliveries[start:]:
                if not delivery.replayed:
                    for record in delivery.records:
                        counts[(delivery.operation, record)] = counts.get((delivery.operation, record), 0) + 1
            assert {k: v for k, v in counts.items() if v > 1} == {}
        assert failures >= 1, "the seeded faults should have failed at least one run"
        # Some batch was committed and then its answer lost: its re-send was recognised by its key.
        assert {"drop_after", "timeout"} & set(em.fault_log) and any(d.replayed for d in em.deliveries)
        errors = [e for (e,) in con.execute("select error from cohortflow_syncs.sync_runs where error is not null").fetchall()]
        assert errors and all(SECRET not in e for e in errors)


def test_refused_and_skipped_records_are_reported_and_held_until_they_change(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    con.execute("update cohorts.vip_buyers set email = 'broken@nowhere' where user_id = 'u01'")  # HubSpot refuses it
    con.execute("update cohorts.vip_buyers set email = '   ' where user_id = 'u02'")  # nothing to address
    case = CASES[IDS.index("hubspot")]
    spec = case.spec()
    with case.emulator(spec.name) as em:
        dest = case.destination(em, spec.name)
        first = run_sync(con, spec, dest, now=T0, lock_dir=tmp_path)
        assert first.status == "succeeded"
        assert first.rows_rejected == 1 and first.rows_rejected_permanently == 1 and first.rows_skipped_by_destination == 1
        assert dict(first.rejected_sample).keys() >= {"u01", "u02"}
        outcomes = dict(con.execute(
            "select record_key, status from cohortflow_syncs.sync_records where run_id = ? and record_key in ('u01', 'u02')",
            [first.run_id],
        ).fetchall())
        assert outcomes == {"u01": "rejected", "u02": "skipped"}
        sent = len(em.batch_requests())

        second = run_sync(con, spec, dest, now=T0 + timedelta(hours=1), lock_dir=tmp_path)
        assert second.rows_processed == 0 and second.rows_held == 2 and len(em.batch_requests()) == sent

        con.execute("update cohorts.vip_buyers set email = 'u01@example.com' where user_id = 'u01'")
        third = run_sync(con, spec, dest, now=T0 + timedelta(hours=2), lock_dir=tmp_path)
        assert third.rows_processed == 1 and em.contact("u01@example.com") is not None


def test_a_transiently_refused_record_is_retried_by_the_next_run(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    case = CASES[IDS.index("braze")]
    spec = case.spec()
    with case.emulator(spec.name) as em:
        assert isinstance(em, BrazeEmulator)
        em.record_errors["u03"] = "Internal error, try again"
        dest = case.destination(em, spec.name)
        first = run_sync(con, spec, dest, now=T0, lock_dir=tmp_path)
        assert first.rows_rejected == 1 and first.rows_rejected_permanently == 0 and "u03" not in em.users
        del em.record_errors["u03"]
        second = run_sync(con, spec, dest, now=T0 + timedelta(hours=1), lock_dir=tmp_path)
        assert second.rows_added == 1 and em.user("u03") is not None


def test_a_whole_batch_refusal_is_split_to_the_bad_record(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    case = CASES[IDS.index("webhook")]
    spec = case.spec()
    with WebhookEmulator(secret=SECRET, poison_user_ids={"u06"}) as em:
        first = run_sync(con, spec, case.destination(em, spec.name), now=T0, lock_dir=tmp_path)
        assert first.status == "succeeded" and first.rows_rejected_permanently == 1
        assert dict(first.rejected_sample)["u06"].startswith("HTTP 400")
        assert set(em.members(spec.name)) == set(audience(con)) - {"u06"}


def test_wrong_credentials_fail_the_run_without_blaming_records_or_leaking_the_key(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    spec = CASES[IDS.index("hubspot")].spec()
    with HubSpotEmulator(access_token="the-right-token") as em:
        dest = HubSpotContactsDestination(access_token=SECRET, base_url=em.url, http=fast_config())
        with pytest.raises(SyncError) as info:
            run_sync(con, spec, dest, now=T0, lock_dir=tmp_path)
        assert "401" in str(info.value) and SECRET not in str(info.value)
        assert info.value.result is not None and info.value.result.rows_rejected == 0
        stored = con.execute("select error from cohortflow_syncs.sync_runs").fetchone()
        assert stored is not None and SECRET not in stored[0]
        # Fixed settings: the next run sends everything.
        fixed = HubSpotContactsDestination(access_token="the-right-token", base_url=em.url, http=fast_config())
        assert run_sync(con, spec, fixed, now=T0 + timedelta(hours=1), lock_dir=tmp_path).rows_added == 11
