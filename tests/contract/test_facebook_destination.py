"""Facebook Custom Audiences destination against its emulator: hashed PII only, sessions, caps, Graph errors."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import pytest
from contract_helpers import FakeClock, fake_options, fast_config, make_batch, make_run, users

from reverse_etl.destinations import destination_class
from reverse_etl.destinations.facebook import SKIP_REASON, FacebookCustomAudienceDestination, session_id_for
from reverse_etl.emulators.facebook import FacebookEmulator
from reverse_etl.errors import BatchRejectedError, DestinationError, TransientDestinationError
from reverse_etl.http import DestinationConfigError

TOKEN = "EAAGfacebook-access-token-xyz"
AUDIENCE = "23850000000000001"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def facebook() -> Iterator[FacebookEmulator]:
    with FacebookEmulator(access_token=TOKEN, audience_ids=[AUDIENCE]) as server:
        yield server


def destination(facebook: FacebookEmulator, *, audience: str = AUDIENCE, token: str = TOKEN, **kwargs: object) -> FacebookCustomAudienceDestination:
    return FacebookCustomAudienceDestination(
        audience, access_token=token, base_url=facebook.url, http=fast_config(), sender_options=fake_options(FakeClock()), **kwargs  # type: ignore[arg-type]
    )


PEOPLE = [
    {"user_id": "u1", "email": "  Jane.Doe@Example.COM ", "phone": "090-1234-5678"},
    {"user_id": "u2", "email": None, "phone": "+44 (0)20 7946 0958"},
    {"user_id": "u3", "email": sha("hashed@example.com").upper(), "phone": None},
    {"user_id": "u4", "email": "n/a", "phone": "call me"},
]


def test_adds_and_removes_hashed_identifiers_only(facebook: FacebookEmulator) -> None:
    dest = destination(facebook, default_country_code="81")
    result = dest.send_batch(make_run(), make_batch("add", PEOPLE, key="k-add"))
    assert result is not None and result.skipped == {"u4": SKIP_REASON} and not result.permanent

    request = facebook.batch_requests()[0]
    assert request.method == "POST" and request.path == f"/v21.0/{AUDIENCE}/users"
    body = request.json()
    assert body["payload"]["schema"] == ["EMAIL_SHA256", "PHONE_SHA256"]
    assert body["payload"]["data"] == [
        [sha("jane.doe@example.com"), sha("819012345678")],
        ["", sha("442079460958")],
        [sha("hashed@example.com"), ""],  # already hashed: passed through, lower-cased
    ]
    # Nothing raw left the process: no e-mail, no digits of a phone, in any request.
    raw = request.body.decode()
    assert "@" not in raw and "1234" not in raw.replace(sha("819012345678"), "") and facebook.raw_values == []
    assert facebook.hashes(AUDIENCE, "EMAIL_SHA256") == {sha("jane.doe@example.com"), sha("hashed@example.com")}

    dest.send_batch(make_run(), make_batch("remove", PEOPLE[:2], key="k-rm", sequence=2))
    removal = facebook.batch_requests()[1]
    assert removal.method == "DELETE" and removal.path == request.path
    assert facebook.hashes(AUDIENCE, "EMAIL_SHA256") == {sha("hashed@example.com")}
    assert facebook.hashes(AUDIENCE, "PHONE_SHA256") == set()


def test_a_change_adds_the_current_identifiers(facebook: FacebookEmulator) -> None:
    dest = destination(facebook)
    dest.send_batch(make_run(), make_batch("change", [{"user_id": "u1", "email": "new@example.com"}]))
    assert facebook.batch_requests()[0].method == "POST"
    assert facebook.hashes(AUDIENCE, "EMAIL_SHA256") == {sha("new@example.com")}


def test_schema_follows_the_identifiers_the_sync_has(facebook: FacebookEmulator) -> None:
    destination(facebook).send_batch(make_run(), make_batch("add", users(2)))
    assert facebook.batch_requests()[0].json()["payload"]["schema"] == ["EMAIL_SHA256"]
    with pytest.raises(DestinationError, match="neither an 'email' nor a 'phone'"):
        destination(facebook).send_batch(make_run(), make_batch("add", [{"user_id": "u1", "ltv": 3.0}]))


def test_a_batch_of_nobody_usable_sends_nothing(facebook: FacebookEmulator) -> None:
    result = destination(facebook).send_batch(make_run(), make_batch("add", PEOPLE[3:]))
    assert result is not None and result.skipped == {"u4": SKIP_REASON} and facebook.requests == []


def test_session_is_stable_across_retries_so_facebook_deduplicates(facebook: FacebookEmulator) -> None:
    facebook.inject("drop_after", "server_error")
    destination(facebook).send_batch(make_run(), make_batch("add", users(3), key="stable-key"))
    sessions = [r.json()["session"] for r in facebook.batch_requests()]
    assert len(sessions) == 3
    expected = {"session_id": session_id_for("stable-key"), "batch_seq": 1, "last_batch_flag": True, "estimated_num_total": 3}
    assert all(s == expected for s in sessions)
    assert [d.replayed for d in facebook.deliveries] == [False, True] and facebook.duplicate_commits() == {}


def test_10000_users_per_request_in_one_session(facebook: FacebookEmulator) -> None:
    assert FacebookCustomAudienceDestination.max_batch_size == 10_000
    rows = [{"user_id": f"u{i}", "email": f"p{i}@example.com"} for i in range(10_001)]
    destination(facebook).send_batch(make_run(), make_batch("add", rows, key="big"))
    bodies = [r.json() for r in facebook.batch_requests()]
    assert [len(b["payload"]["data"]) for b in bodies] == [10_000, 1]
    assert [(b["session"]["batch_seq"], b["session"]["last_batch_flag"]) for b in bodies] == [(1, False), (2, True)]
    assert {b["session"]["session_id"] for b in bodies} == {session_id_for("big")}
    assert all(b["session"]["estimated_num_total"] == 10_001 for b in bodies)
    assert len(facebook.members(AUDIENCE)) == 10_001


def test_graph_errors_are_classed_by_code(facebook: FacebookEmulator) -> None:
    with pytest.raises(DestinationConfigError, match="code.: 190") as bad_token:
        destination(facebook, token="EAAG-expired-token").send_batch(make_run(), make_batch("add", users(1)))
    assert "EAAG-expired-token" not in str(bad_token.value)
    with pytest.raises(DestinationConfigError, match="does not exist"):
        destination(facebook, audience="23859999999999999").send_batch(make_run(), make_batch("add", users(1)))
    # Throttling comes as a 400 with code 80003: retried, not a rejection.
    facebook.inject("throttle", "throttle")
    destination(facebook).send_batch(make_run(), make_batch("add", users(1), key="after-throttle"))
    assert len(facebook.members(AUDIENCE)) == 1
    facebook.inject(*["throttle"] * 4)
    with pytest.raises(TransientDestinationError, match="80003"):
        destination(facebook).send_batch(make_run(), make_batch("add", users(1), key="throttled"))
    facebook.inject("bad_request")
    with pytest.raises(BatchRejectedError):
        destination(facebook).send_batch(make_run(), make_batch("add", users(1), key="rejected"))


def test_secrets_hidden(facebook: FacebookEmulator, caplog: pytest.LogCaptureFixture) -> None:
    dest = destination(facebook)
    facebook.inject("server_error", "drop_before")
    with caplog.at_level(logging.DEBUG):
        dest.send_batch(make_run(), make_batch("add", users(1)))
    assert TOKEN not in caplog.text and TOKEN not in repr(dest) and "access_token='***'" in repr(dest)
    assert all(TOKEN not in r.path for r in facebook.requests)  # in a header, never in the URL


def test_declared_properties_and_from_settings() -> None:
    cls = destination_class("facebook_custom_audience")
    assert cls is FacebookCustomAudienceDestination
    assert cls.requires_consent is True and cls.any_identifier_of == {"email", "phone"}
    built = cls.from_settings(
        {"audience_id": AUDIENCE, "access_token": TOKEN, "default_country_code": "+81"}, sync_name="s", base_dir=None
    )
    assert isinstance(built, FacebookCustomAudienceDestination)
    assert built.default_country_code == "81" and built.location == f"https://graph.facebook.com/v21.0/{AUDIENCE}/users"
    for settings, setting in [
        ({"access_token": TOKEN}, "audience_id"),
        ({"audience_id": "my audience", "access_token": TOKEN}, "audience_id"),
        ({"audience_id": AUDIENCE}, "access_token"),
        ({"audience_id": AUDIENCE, "access_token": TOKEN, "default_country_code": "0"}, "default_country_code"),
        ({"audience_id": AUDIENCE, "access_token": TOKEN, "api_version": "21"}, "api_version"),
    ]:
        with pytest.raises(ValueError, match=rf"facebook_custom_audience destination: .*'{setting}'"):
            cls.from_settings(settings, sync_name="s", base_dir=None)
