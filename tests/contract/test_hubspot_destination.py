"""HubSpot destination against its emulator: batch upsert by e-mail, 100 cap, 207 errors, removes, 429, secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

import pytest
from contract_helpers import SYNC, FakeClock, fake_options, fast_config, make_batch, make_run, users

from reverse_etl.destinations import destination_class
from reverse_etl.destinations.hubspot import SKIP_REASON, HubSpotContactsDestination
from reverse_etl.emulators.hubspot import HubSpotEmulator
from reverse_etl.errors import BatchRejectedError, TransientDestinationError
from reverse_etl.http import DestinationConfigError

TOKEN = "pat-na1-hubspot-private-app-token"
MEMBERSHIP = f"in_{SYNC}"


@pytest.fixture
def hubspot() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(access_token=TOKEN, membership_property=MEMBERSHIP) as server:
        yield server


def destination(hubspot: HubSpotEmulator, clock: FakeClock | None = None, **kwargs: object) -> HubSpotContactsDestination:
    return HubSpotContactsDestination(
        access_token=TOKEN, base_url=hubspot.url, http=fast_config(), sender_options=fake_options(clock or FakeClock()), **kwargs  # type: ignore[arg-type]
    )


def test_contacts_upserted_by_email_with_text_properties_and_membership(hubspot: HubSpotEmulator) -> None:
    dest = destination(hubspot, user_id_property="cohortflow_user_id")
    rows = [{"user_id": "u1", "email": " Ann@Example.com ", "ltv": 12.5, "vip": True, "last_order_at": datetime(2026, 2, 1, 9, 30)},
            {"user_id": "u2", "email": "bob@example.com", "ltv": None, "vip": False, "last_order_at": None}]
    dest.send_batch(make_run(), make_batch("add", rows, key="k1"))
    inputs = hubspot.batch_requests()[0].json()["inputs"]
    assert inputs[0] == {
        "idProperty": "email", "id": "ann@example.com", "objectWriteTraceId": "u1",
        "properties": {"cohortflow_user_id": "u1", "ltv": "12.5", "vip": "true", "last_order_at": "2026-02-01T09:30:00.000Z",
                       MEMBERSHIP: "true"},
    }
    assert hubspot.contact("bob@example.com") == {"email": "bob@example.com", "cohortflow_user_id": "u2", "ltv": "", "vip": "false",
                                                  "last_order_at": "", MEMBERSHIP: "true"}

    dest.send_batch(make_run(), make_batch("change", [{**rows[1], "ltv": 7.0}], key="k2", sequence=2))
    assert hubspot.contact("bob@example.com")["ltv"] == "7.0"  # type: ignore[index]

    dest.send_batch(make_run(), make_batch("remove", rows[:1], key="k3", sequence=3))
    assert hubspot.batch_requests()[-1].json()["inputs"][0]["properties"] == {MEMBERSHIP: "false"}
    contact = hubspot.contact("ann@example.com")
    assert contact is not None and contact[MEMBERSHIP] == "false" and contact["ltv"] == "12.5"  # kept, flagged out


def test_user_id_is_not_sent_unless_a_property_is_named(hubspot: HubSpotEmulator) -> None:
    destination(hubspot).send_batch(make_run(), make_batch("add", users(1)))
    assert set(hubspot.batch_requests()[0].json()["inputs"][0]["properties"]) == {"ltv", MEMBERSHIP}


def test_multi_status_errors_map_to_records_by_class(hubspot: HubSpotEmulator) -> None:
    hubspot.record_errors["user3@example.com"] = "RATE_LIMITS"
    rows = users(6)
    rows[1]["email"] = "broken@nowhere"  # HubSpot refuses the address
    rows[4]["email"] = None  # nothing to address the contact by
    rows[5]["email"] = "USER0@example.com"  # the same contact as rows[0]
    result = destination(hubspot).send_batch(make_run(), make_batch("add", rows, keys=[f"k{i}" for i in range(6)]))
    assert result is not None
    assert set(result.permanent) == {"k1"} and result.permanent["k1"].startswith("hubspot VALIDATION_ERROR")
    assert set(result.rejected) == {"k3", "k5"} and result.rejected["k3"].startswith("hubspot RATE_LIMITS")
    assert "'k0'" in result.rejected["k5"]
    assert result.skipped == {"k4": SKIP_REASON}
    assert set(hubspot.contacts) == {"user0@example.com", "user2@example.com"}


def test_100_inputs_per_request(hubspot: HubSpotEmulator) -> None:
    assert HubSpotContactsDestination.max_batch_size == 100
    destination(hubspot).send_batch(make_run(), make_batch("add", users(250), key="big"))
    assert [len(r.json()["inputs"]) for r in hubspot.batch_requests()] == [100, 100, 50]
    assert len(hubspot.contacts) == 250


def test_missing_property_is_a_configuration_error_not_a_rejection_of_every_record() -> None:
    with HubSpotEmulator(access_token=TOKEN, known_properties={"ltv"}) as portal:
        with pytest.raises(DestinationConfigError, match=f"{MEMBERSHIP}.*does not exist|does not exist"):
            destination(portal).send_batch(make_run(), make_batch("add", users(2)))
        assert portal.contacts == {}


def test_whole_request_refusal_is_a_batch_rejection(hubspot: HubSpotEmulator) -> None:
    hubspot.inject("bad_request")
    with pytest.raises(BatchRejectedError) as info:
        destination(hubspot).send_batch(make_run(), make_batch("add", users(2)))
    assert info.value.status == 400


def test_429_retried_after_retry_after_then_transient_when_it_persists(hubspot: HubSpotEmulator) -> None:
    hubspot.faults.retry_after = 0.25
    hubspot.inject("throttle")
    clock = FakeClock()
    destination(hubspot, clock).send_batch(make_run(), make_batch("add", users(2), key="k"))
    assert clock.sleeps == [0.25] and len(hubspot.contacts) == 2
    hubspot.inject(*["throttle"] * 4)
    with pytest.raises(TransientDestinationError, match="429") as info:
        destination(hubspot).send_batch(make_run(), make_batch("add", users(2, start=5), key="k2"))
    assert info.value.retry_after == pytest.approx(0.25)
    assert [r.header("idempotency-key") for r in hubspot.batch_requests()] == ["k", "k"] + ["k2"] * 4


def test_token_hidden_and_wrong_token_is_configuration(hubspot: HubSpotEmulator, caplog: pytest.LogCaptureFixture) -> None:
    wrong = HubSpotContactsDestination(access_token="pat-wrong-token-999", base_url=hubspot.url, http=fast_config())
    with caplog.at_level(logging.DEBUG), pytest.raises(DestinationConfigError) as info:
        wrong.send_batch(make_run(), make_batch("add", users(1)))
    assert info.value.status == 401
    for text in (str(info.value), caplog.text, repr(wrong), repr(destination(hubspot))):
        assert "pat-wrong-token-999" not in text and TOKEN not in text


def test_declared_properties_and_from_settings() -> None:
    cls = destination_class("hubspot")
    assert cls is HubSpotContactsDestination
    assert cls.requires_consent is True and cls.required_identifiers == {"email"} and cls.max_requests_per_second == 10
    built = cls.from_settings({"access_token": TOKEN, "membership_property": "in_vip"}, sync_name=SYNC, base_dir=None)
    assert isinstance(built, HubSpotContactsDestination)
    assert built.location == "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert" and built.membership_property == "in_vip"
    with pytest.raises(ValueError, match="hubspot destination: setting 'membership_property'"):
        cls.from_settings({"access_token": TOKEN, "membership_property": "In VIP"}, sync_name=SYNC, base_dir=None)
    with pytest.raises(ValueError, match="hubspot destination: setting 'access_token' is required"):
        cls.from_settings({}, sync_name=SYNC, base_dir=None)
