"""Braze destination against the Braze emulator: attributes objects, 75 cap, errors[], removes, 429, secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from contract_helpers import SYNC, FakeClock, RecordingSleep, fake_options, fast_config, make_batch, make_run, users

from reverse_etl.destinations import destination_class
from reverse_etl.destinations.braze import BrazeDestination
from reverse_etl.emulators.base import Faults
from reverse_etl.emulators.braze import BrazeEmulator
from reverse_etl.errors import BatchRejectedError, TransientDestinationError
from reverse_etl.http import DestinationConfigError, SenderOptions

API_KEY = "braze-rest-key-0f1e2d3c4b5a"
MEMBERSHIP = f"in_{SYNC}"


@pytest.fixture
def braze() -> Iterator[BrazeEmulator]:
    with BrazeEmulator(api_key=API_KEY, membership_attribute=MEMBERSHIP) as server:
        yield server


def destination(braze: BrazeEmulator, clock: FakeClock | None = None, **kwargs: object) -> BrazeDestination:
    return BrazeDestination(braze.url, api_key=API_KEY, http=fast_config(), sender_options=fake_options(clock or FakeClock()), **kwargs)  # type: ignore[arg-type]


def test_add_change_remove_as_attributes_with_a_membership_flag(braze: BrazeEmulator) -> None:
    dest = destination(braze)
    run = make_run()
    rows = [{"user_id": "u1", "email": "a@example.com", "phone": "+15551234567", "ltv": 10.5, "tier": "gold"},
            {"user_id": "u2", "email": "b@example.com", "phone": None, "ltv": 3.0, "tier": "silver"}]
    dest.send_batch(run, make_batch("add", rows, key="k1"))
    assert braze.user("u1") == {"email": "a@example.com", "phone": "+15551234567", "ltv": 10.5, "tier": "gold", MEMBERSHIP: True}
    sent = braze.batch_requests()[0].json()["attributes"][0]
    assert sent["external_id"] == "u1" and sent[MEMBERSHIP] is True and "user_id" not in sent

    dest.send_batch(run, make_batch("change", [{**rows[1], "tier": "gold"}], key="k2", sequence=2))
    assert braze.user("u2")["tier"] == "gold"  # type: ignore[index]

    dest.send_batch(run, make_batch("remove", rows[:1] + [{**rows[0], "user_id": "never-sent"}], keys=["u1", "x"], key="k3", sequence=3))
    removal = braze.batch_requests()[-1].json()["attributes"]
    assert removal[0] == {"external_id": "u1", MEMBERSHIP: False, "_update_existing_only": True}
    # The profile stays (history, other segments), out of the cohort; a remove never creates a user.
    assert braze.user("u1") == {"email": "a@example.com", "phone": "+15551234567", "ltv": 10.5, "tier": "gold", MEMBERSHIP: False}
    assert braze.user("never-sent") is None
    assert [(d.operation, d.records) for d in braze.committed()] == [("in", ("u1", "u2")), ("in", ("u2",)), ("out", ("u1", "never-sent"))]


def test_membership_attribute_can_be_named(braze: BrazeEmulator) -> None:
    destination(braze, membership_attribute="is_vip").send_batch(make_run(), make_batch("add", users(1)))
    assert braze.user("u0000")["is_vip"] is True  # type: ignore[index]
    with pytest.raises(ValueError, match="membership_attribute"):
        BrazeDestination(braze.url, api_key=API_KEY, membership_attribute="is vip!")


def test_75_objects_per_request(braze: BrazeEmulator) -> None:
    dest = destination(braze)
    assert BrazeDestination.max_batch_size == 75
    dest.send_batch(make_run(), make_batch("add", users(160), key="big"))  # larger than the engine would send
    requests = braze.batch_requests()
    assert [len(r.json()["attributes"]) for r in requests] == [75, 75, 10]
    assert [r.header("idempotency-key") for r in requests] == ["big.1of3", "big.2of3", "big.3of3"]
    assert len(braze.users) == 160


def test_partial_errors_map_to_their_records_permanent_or_transient(braze: BrazeEmulator) -> None:
    braze.record_errors["u0003"] = "Internal error while processing, try again"
    rows = users(5)
    rows[1]["email"] = "not-an-email"
    rows[4]["user_id"] = None
    result = destination(braze).send_batch(make_run(), make_batch("add", rows, keys=["k0", "k1", "k2", "k3", "k4"]))
    assert result is not None
    assert result.permanent == {"k1": "braze: Invalid 'email' attribute"}
    assert result.rejected == {"k3": "braze: Internal error while processing, try again"}
    assert set(result.skipped) == {"k4"}
    assert set(braze.users) == {"u0000", "u0002"}


def test_whole_request_refusal_is_a_batch_rejection(braze: BrazeEmulator) -> None:
    braze.inject("bad_request")
    with pytest.raises(BatchRejectedError) as info:
        destination(braze).send_batch(make_run(), make_batch("add", users(2)))
    assert info.value.status == 400 and braze.users == {}


def test_wrong_key_fails_as_configuration_and_hides_the_key(braze: BrazeEmulator, caplog: pytest.LogCaptureFixture) -> None:
    wrong = BrazeDestination(braze.url, api_key="wrong-braze-key-123", http=fast_config())
    with caplog.at_level(logging.DEBUG), pytest.raises(DestinationConfigError) as info:
        wrong.send_batch(make_run(), make_batch("add", users(1)))
    assert info.value.status == 401 and "wrong-braze-key-123" not in str(info.value)
    assert "wrong-braze-key-123" not in caplog.text and "wrong-braze-key-123" not in repr(wrong)


def test_rate_limit_429_waits_as_announced_and_delivers_everything() -> None:
    # Braze's 3,000 requests / 3 s, scaled to 4 requests / 0.4 s.
    with BrazeEmulator(api_key=API_KEY, faults=Faults(rate_limit=4, rate_window=0.4)) as braze:
        sleep = RecordingSleep()
        dest = BrazeDestination(braze.url, api_key=API_KEY, http=fast_config(max_attempts=10),
                                sender_options=SenderOptions(sleep=sleep, random=lambda: 0.0))
        for n in range(8):
            dest.send_batch(make_run(), make_batch("add", users(3, start=3 * n), key=f"k{n}", sequence=n + 1))
        assert len(braze.users) == 24 and braze.duplicate_commits() == {}
        assert dest.stats.throttled >= 1 and len(braze.requests) == 8 + dest.stats.throttled
        # Each retry waited at least until the window freed (the announced Retry-After), never 0 s.
        assert len(sleep.sleeps) == dest.stats.throttled and min(sleep.sleeps) > 0


def test_server_errors_then_transient_with_the_same_key(braze: BrazeEmulator) -> None:
    braze.inject(*["server_error"] * 4)
    with pytest.raises(TransientDestinationError):
        destination(braze).send_batch(make_run(), make_batch("add", users(2), key="kk"))
    assert {r.header("idempotency-key") for r in braze.batch_requests()} == {"kk"} and len(braze.batch_requests()) == 4


def test_declared_properties_and_from_settings() -> None:
    cls = destination_class("braze")
    assert cls is BrazeDestination
    assert cls.requires_consent is True and cls.required_identifiers == {"user_id"}
    assert cls.max_requests_per_second == 1000
    built = cls.from_settings(
        {"rest_endpoint": "https://rest.iad-01.braze.com/", "api_key": API_KEY, "max_requests_per_second": 50},
        sync_name=SYNC, base_dir=None,
    )
    assert isinstance(built, BrazeDestination)
    assert built.location == "https://rest.iad-01.braze.com/users/track"
    assert built.max_requests_per_second == 50 and built.sender.pacer.interval == pytest.approx(0.02)
    assert API_KEY not in repr(built)
    with pytest.raises(ValueError, match="braze destination: setting 'rest_endpoint' is required"):
        cls.from_settings({"api_key": API_KEY}, sync_name=SYNC, base_dir=None)
    with pytest.raises(ValueError, match="braze destination: setting 'api_key' is required.*BRAZE_API_KEY"):
        cls.from_settings({"rest_endpoint": "https://rest.iad-01.braze.com"}, sync_name=SYNC, base_dir=None)
