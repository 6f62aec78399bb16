"""Klaviyo destination against its emulator: async import jobs polled to completion, import errors, caps, 429."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from contract_helpers import SYNC, FakeClock, fake_options, fast_config, make_batch, make_run, users

from reverse_etl.destinations import destination_class
from reverse_etl.destinations.klaviyo import SKIP_REASON, KlaviyoProfilesDestination
from reverse_etl.emulators.base import Faults
from reverse_etl.emulators.klaviyo import KlaviyoEmulator
from reverse_etl.errors import BatchRejectedError, TransientDestinationError
from reverse_etl.http import DestinationConfigError

KEY = "pk_klaviyo_private_key_abcdef"
MEMBERSHIP = f"in_{SYNC}"


@pytest.fixture
def klaviyo() -> Iterator[KlaviyoEmulator]:
    with KlaviyoEmulator(api_key=KEY, membership_property=MEMBERSHIP, polls_to_complete=3) as server:
        yield server


def destination(klaviyo: KlaviyoEmulator, clock: FakeClock | None = None, **kwargs: object) -> KlaviyoProfilesDestination:
    return KlaviyoProfilesDestination(
        api_key=KEY, base_url=klaviyo.url, poll_interval=0.5, http=fast_config(),
        sender_options=fake_options(clock or FakeClock()), **kwargs,  # type: ignore[arg-type]
    )


def test_profiles_imported_by_a_job_polled_until_complete(klaviyo: KlaviyoEmulator) -> None:
    clock = FakeClock()
    dest = destination(klaviyo, clock, default_country_code="81")
    rows = [{"user_id": "u1", "email": " Kei@Example.JP ", "phone": "090-1234-5678", "ltv": 3.5},
            {"user_id": "u2", "email": None, "phone": None, "ltv": 1.0}]
    result = dest.send_batch(make_run(), make_batch("add", rows, key="k1"))
    assert result is not None and not result.rejected and not result.permanent and not result.skipped

    create = klaviyo.requests[0]
    assert create.method == "POST" and create.path == "/api/profile-bulk-import-jobs/"
    assert create.header("authorization") == f"Klaviyo-API-Key {KEY}" and create.header("revision") == "2024-10-15"
    assert create.header("content-type") == "application/vnd.api+json" and create.header("idempotency-key") == "k1"
    profile = create.json()["data"]["attributes"]["profiles"]["data"][0]
    assert profile == {"type": "profile", "attributes": {
        "external_id": "u1", "email": "kei@example.jp", "phone_number": "+819012345678",
        "properties": {"ltv": 3.5, MEMBERSHIP: True}}}
    # Status read until complete (3 reads), spaced by poll_interval; no error page needed.
    polls = [r for r in klaviyo.requests if r.method == "GET"]
    assert [r.path for r in polls] == ["/api/profile-bulk-import-jobs/job00001/"] * 3
    assert clock.sleeps == [0.5, 0.5]
    assert klaviyo.profile("u1")["properties"] == {"ltv": 3.5, MEMBERSHIP: True}  # type: ignore[index]

    dest.send_batch(make_run(), make_batch("remove", rows[:1], key="k2", sequence=2))
    removal = klaviyo.batch_requests()[-1].json()["data"]["attributes"]["profiles"]["data"][0]["attributes"]
    assert removal["properties"] == {MEMBERSHIP: False} and removal["external_id"] == "u1"
    assert klaviyo.profile("u1")["properties"] == {"ltv": 3.5, MEMBERSHIP: False}  # type: ignore[index]


def test_import_errors_on_several_pages_map_to_their_records() -> None:
    with KlaviyoEmulator(api_key=KEY, errors_page_size=1, record_errors={"u0003": ("internal_error", "try again later")}) as klaviyo:
        rows = users(5)
        rows[1]["email"] = "not-an-address@nowhere"  # passes our trim, Klaviyo refuses it
        rows[4] = {"user_id": None, "email": "", "ltv": 1.0}
        result = destination(klaviyo).send_batch(make_run(), make_batch("add", rows, keys=[f"k{i}" for i in range(5)]))
        assert result is not None
        assert set(result.permanent) == {"k1"} and "Invalid email" in result.permanent["k1"]
        assert result.rejected == {"k3": "klaviyo internal_error: try again later"}
        assert result.skipped == {"k4": SKIP_REASON}
        pages = [r for r in klaviyo.requests if r.path.endswith("/import-errors/")]
        assert len(pages) == 2 and pages[1].param("page[cursor]") == "1"
        assert set(klaviyo.profiles) == {"u0000", "u0002"}


def test_a_batch_above_5_mb_goes_as_several_jobs() -> None:
    with KlaviyoEmulator(api_key=KEY, max_bytes=2_000, polls_to_complete=1) as klaviyo:
        dest = destination(klaviyo, max_job_bytes=2_000)
        assert KlaviyoProfilesDestination.max_batch_size == 10_000 and dest.max_job_bytes == 2_000
        dest.send_batch(make_run(), make_batch("add", users(40), key="big"))
        creates = klaviyo.batch_requests()
        assert len(creates) > 1 and all(len(r.body) <= 2_000 for r in creates)
        assert [r.header("idempotency-key") for r in creates] == [f"big.{i}of{len(creates)}" for i in range(1, len(creates) + 1)]
        assert len(klaviyo.profiles) == 40 and len(klaviyo.jobs) == len(creates)


def test_job_creation_retried_after_a_timeout_does_not_create_a_second_job() -> None:
    with KlaviyoEmulator(api_key=KEY, polls_to_complete=1, faults=Faults(timeout_delay=0.5)) as klaviyo:
        klaviyo.inject("timeout", "drop_after")
        dest = KlaviyoProfilesDestination(api_key=KEY, base_url=klaviyo.url, poll_interval=0,
                                          http=fast_config(read_timeout=0.2), sender_options=fake_options(FakeClock()))
        dest.send_batch(make_run(), make_batch("add", users(3), key="once"))
        assert len(klaviyo.jobs) == 1 and klaviyo.duplicate_commits() == {}
        assert [d.replayed for d in klaviyo.deliveries] == [False, True, True]


def test_429_waits_for_the_announced_reset() -> None:
    with KlaviyoEmulator(api_key=KEY, polls_to_complete=1, faults=Faults(retry_after=0.4, retry_after_style="ratelimit-reset")) as klaviyo:
        klaviyo.inject("throttle")
        clock = FakeClock()
        destination(klaviyo, clock).send_batch(make_run(), make_batch("add", users(2)))
        throttled = klaviyo.requests[0]
        assert throttled.method == "POST"
        # Klaviyo's RateLimit-Reset is in whole seconds: 0.4 s rounds up to 1.
        assert clock.sleeps[0] == 1.0 and len(klaviyo.profiles) == 2


def test_a_cancelled_job_or_one_that_never_ends_is_transient() -> None:
    with KlaviyoEmulator(api_key=KEY, polls_to_complete=1, job_status_override="cancelled") as klaviyo:
        with pytest.raises(TransientDestinationError, match="ended cancelled"):
            destination(klaviyo).send_batch(make_run(), make_batch("add", users(1)))
    with KlaviyoEmulator(api_key=KEY, polls_to_complete=10_000) as klaviyo:
        clock = FakeClock()
        with pytest.raises(TransientDestinationError, match="still processing after 5 s"):
            destination(klaviyo, clock, poll_timeout=5).send_batch(make_run(), make_batch("add", users(1)))
        assert sum(clock.sleeps) == pytest.approx(5.0)


def test_request_level_refusals(klaviyo: KlaviyoEmulator, caplog: pytest.LogCaptureFixture) -> None:
    klaviyo.inject("bad_request")
    with pytest.raises(BatchRejectedError):
        destination(klaviyo).send_batch(make_run(), make_batch("add", users(1)))
    wrong = KlaviyoProfilesDestination(api_key="pk_wrong_key_42", base_url=klaviyo.url, http=fast_config())
    with caplog.at_level(logging.DEBUG), pytest.raises(DestinationConfigError) as info:
        wrong.send_batch(make_run(), make_batch("add", users(1)))
    assert info.value.status == 401
    for text in (str(info.value), caplog.text, repr(wrong)):
        assert "pk_wrong_key_42" not in text


def test_declared_properties_and_from_settings() -> None:
    cls = destination_class("klaviyo")
    assert cls is KlaviyoProfilesDestination
    assert cls.requires_consent is True and cls.any_identifier_of == {"user_id", "email", "phone"}
    built = cls.from_settings({"api_key": KEY, "poll_interval": 2, "revision": "2025-01-15"}, sync_name=SYNC, base_dir=None)
    assert isinstance(built, KlaviyoProfilesDestination)
    assert built.poll_interval == 2.0 and built.revision == "2025-01-15" and KEY not in repr(built)
    assert built.location == "https://a.klaviyo.com/api/profile-bulk-import-jobs/"
    for settings, setting in [
        ({}, "api_key"),
        ({"api_key": KEY, "revision": "latest"}, "revision"),
        ({"api_key": KEY, "poll_timeout": 0}, "poll_timeout"),
        ({"api_key": KEY, "list_id": "abc"}, "list_id"),
    ]:
        with pytest.raises(ValueError, match=rf"klaviyo destination: .*'{setting}'"):
            cls.from_settings(settings, sync_name=SYNC, base_dir=None)
