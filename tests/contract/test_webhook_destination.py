"""Webhook destination against the webhook emulator: payload shape, signature, caps, failures, secrets."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from contract_helpers import SYNC, FakeClock, fake_options, fast_config, make_batch, make_run, users

from reverse_etl.destinations import destination_class
from reverse_etl.destinations.base import Secret
from reverse_etl.destinations.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookDestination, sign, verify_signature
from reverse_etl.emulators.base import Faults
from reverse_etl.emulators.webhook import WebhookEmulator
from reverse_etl.errors import BatchRejectedError, TransientDestinationError
from reverse_etl.http import DestinationConfigError

SECRET = "whsec-very-secret-0123456789"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[WebhookEmulator]:
    with WebhookEmulator(secret=SECRET) as server:
        yield server


def destination(receiver: WebhookEmulator, clock: FakeClock | None = None, **kwargs: object) -> WebhookDestination:
    return WebhookDestination(
        receiver.url + "/cohorts", secret=SECRET, http=fast_config(), sender_options=fake_options(clock or FakeClock()), **kwargs  # type: ignore[arg-type]
    )


def test_add_change_remove_reach_the_receiver_in_amplitude_shape(receiver: WebhookEmulator) -> None:
    dest = destination(receiver, cohort_name="VIP buyers")
    run = make_run()
    dest.send_batch(run, make_batch("add", users(3), key="k-add"))
    dest.send_batch(run, make_batch("change", [{"user_id": "u0001", "email": "new@example.com", "ltv": 99.0}], key="k-chg", sequence=2))
    dest.send_batch(run, make_batch("remove", users(1), key="k-rm", sequence=3))

    assert receiver.members(SYNC) == {
        "u0001": {"email": "new@example.com", "ltv": 99.0},
        "u0002": {"email": "user2@example.com", "ltv": 2.5},
    }
    first, _, last = (r.json() for r in receiver.batch_requests())
    assert set(first) == {"cohort_name", "cohort_id", "in_cohort", "computed_time", "message_id", "users"}
    assert first["cohort_name"] == "VIP buyers" and first["cohort_id"] == SYNC and first["in_cohort"] is True
    assert first["message_id"] == "k-add" and first["computed_time"] == "1772366400"  # 2026-03-01T12:00:00Z
    assert first["users"][0] == {"user_id": "u0000", "user_properties": {"email": "user0@example.com", "ltv": 0.5}}
    assert last["in_cohort"] is False and last["message_id"] == "k-rm" and last["users"][0]["user_id"] == "u0000"


def test_every_request_is_signed_over_the_raw_body_with_a_timestamp(receiver: WebhookEmulator) -> None:
    destination(receiver).send_batch(make_run(), make_batch("add", users(2)))
    request = receiver.batch_requests()[0]
    timestamp = request.header(TIMESTAMP_HEADER)
    assert timestamp is not None and request.header(SIGNATURE_HEADER) == sign(SECRET, timestamp, request.body)
    assert verify_signature(SECRET, request.headers, request.body)
    assert not verify_signature("another-secret", request.headers, request.body)
    assert not verify_signature(SECRET, request.headers, request.body + b" ")
    assert not verify_signature(SECRET, request.headers, request.body, now=float(timestamp) + 3600)  # replayed later
    assert receiver.signature_failures == 0


def test_a_receiver_with_another_secret_refuses_and_the_run_fails_as_misconfigured() -> None:
    with WebhookEmulator(secret="the-receivers-secret") as other:
        with pytest.raises(DestinationConfigError) as info:
            destination(other).send_batch(make_run(), make_batch("add", users(1)))
        assert info.value.status == 401 and other.signature_failures == 1 and other.members(SYNC) == {}
    assert SECRET not in str(info.value)


def test_users_without_user_id_are_skipped_and_duplicates_held_back(receiver: WebhookEmulator) -> None:
    rows = [{"user_id": "a", "email": "a@x.io"}, {"user_id": None, "email": "b@x.io"}, {"user_id": " ", "email": "c@x.io"},
            {"user_id": "a", "email": "d@x.io"}]
    result = destination(receiver).send_batch(make_run(), make_batch("add", rows, keys=["k1", "k2", "k3", "k4"]))
    assert result is not None
    assert set(result.skipped) == {"k2", "k3"} and "unresolved mapping" in result.skipped["k2"]
    assert set(result.rejected) == {"k4"} and "'k1'" in result.rejected["k4"]
    assert receiver.members(SYNC) == {"a": {"email": "a@x.io"}}
    # A batch with nobody to send makes no request at all.
    nothing = destination(receiver).send_batch(make_run(), make_batch("add", rows[1:3], keys=["k2", "k3"], key="k-none"))
    assert nothing is not None and set(nothing.skipped) == {"k2", "k3"} and len(receiver.batch_requests()) == 1


def test_batch_cap_splits_into_requests_with_their_own_message_ids(receiver: WebhookEmulator) -> None:
    receiver.max_users = 3
    dest = destination(receiver, max_batch_size=3)
    assert dest.max_batch_size == 3 and WebhookDestination.max_batch_size == 10_000
    dest.send_batch(make_run(), make_batch("add", users(7), key="big"))
    sizes = [len(r.json()["users"]) for r in receiver.batch_requests()]
    assert sizes == [3, 3, 1]
    assert [r.json()["message_id"] for r in receiver.batch_requests()] == ["big.1of3", "big.2of3", "big.3of3"]
    assert len(receiver.members(SYNC)) == 7


def test_a_batch_over_the_receivers_cap_is_rejected_whole() -> None:
    with WebhookEmulator(secret=SECRET, max_users=2) as small:
        with pytest.raises(BatchRejectedError) as info:
            destination(small).send_batch(make_run(), make_batch("add", users(3)))
    assert info.value.status == 413 and "too many users" in info.value.reason


def test_a_poisoned_batch_is_rejected_whole_with_the_receivers_reason() -> None:
    with WebhookEmulator(secret=SECRET, poison_user_ids={"u0001"}) as strict:
        with pytest.raises(BatchRejectedError) as info:
            destination(strict).send_batch(make_run(), make_batch("add", users(3)))
        assert info.value.status == 400 and "u0001" in info.value.reason
        assert strict.members(SYNC) == {} and len(strict.batch_requests()) == 1


def test_faults_are_retried_with_one_message_id_and_applied_once(receiver: WebhookEmulator) -> None:
    receiver.faults.timeout_delay = 0.5
    receiver.inject("server_error", "throttle", "drop_after", "timeout")
    clock = FakeClock()
    dest = WebhookDestination(receiver.url, secret=SECRET, http=fast_config(read_timeout=0.2, max_attempts=5),
                              sender_options=fake_options(clock))
    dest.send_batch(make_run(), make_batch("add", users(4), key="same-key"))
    requests = receiver.batch_requests()
    assert len(requests) == 5
    assert {r.json()["message_id"] for r in requests} == {"same-key"}
    assert {r.header("idempotency-key") for r in requests} == {"same-key"}
    assert len(receiver.committed()) == 1 and receiver.duplicate_commits() == {}
    assert len(receiver.members(SYNC)) == 4
    assert dest.stats.retries == 4 and dest.stats.timeouts == 1


def test_a_receiver_that_stays_down_gives_a_transient_error(receiver: WebhookEmulator) -> None:
    receiver.inject(*["server_error"] * 4)
    with pytest.raises(TransientDestinationError) as info:
        destination(receiver).send_batch(make_run(), make_batch("add", users(2)))
    assert "HTTP 503" in str(info.value) and receiver.members(SYNC) == {}


def test_without_an_engine_key_the_batch_key_is_stable_within_a_run_and_differs_across_runs(receiver: WebhookEmulator) -> None:
    dest = destination(receiver)
    batch = make_batch("add", users(2), key="")
    receiver.inject("server_error")
    dest.send_batch(make_run(run_id="run-1"), batch)
    dest.send_batch(make_run(run_id="run-2"), batch)
    ids = [r.json()["message_id"] for r in receiver.batch_requests()]
    assert ids[0] == ids[1] != ids[2] and all(i.startswith(SYNC) for i in ids)


def test_secrets_never_in_repr_logs_or_errors(receiver: WebhookEmulator, caplog: pytest.LogCaptureFixture) -> None:
    dest = destination(receiver)
    assert SECRET not in repr(dest) and "secret='***'" in repr(dest)
    receiver.inject(*["server_error"] * 4)
    with caplog.at_level(logging.DEBUG), pytest.raises(TransientDestinationError) as info:
        dest.send_batch(make_run(), make_batch("add", users(1)))
    assert SECRET not in caplog.text and SECRET not in str(info.value)
    assert SECRET not in json.dumps(dest.settings(), default=str)


def test_a_key_in_the_receiver_url_query_stays_out_of_logs_and_location(
    receiver: WebhookEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    code = "azure-function-key-55aa"
    dest = WebhookDestination(f"{receiver.url}/api/cohorts?code={code}", secret=SECRET, http=fast_config())
    with caplog.at_level(logging.INFO):
        dest.send_batch(make_run(), make_batch("add", users(1)))
    assert receiver.batch_requests()[0].param("code") == code  # the receiver got it
    assert "HTTP Request: POST" in caplog.text and code not in caplog.text
    assert code not in dest.location and code not in repr(dest)


def test_from_settings_builds_and_names_bad_settings(tmp_path: Path) -> None:
    cls = destination_class("webhook")
    assert cls is WebhookDestination
    built = cls.from_settings(
        {"url": "https://hooks.example.com/cohorts?token=abc", "secret": SECRET, "timeout": 2, "max_attempts": 3},
        sync_name="vip_buyers", base_dir=tmp_path,
    )
    assert isinstance(built, WebhookDestination) and isinstance(built.secret, Secret)
    assert built.location == "https://hooks.example.com/cohorts" and built.cohort_id == "vip_buyers"
    assert built.sender.config.read_timeout == 2.0 and built.sender.config.max_attempts == 3
    assert built.required_identifiers == {"user_id"}
    from_secret = cls.from_settings({"url": "http://127.0.0.1:1/", "secret": Secret(SECRET)}, sync_name="s", base_dir=None)
    assert isinstance(from_secret, WebhookDestination) and from_secret.secret == Secret(SECRET)
    for settings, setting in [
        ({"secret": SECRET}, "url"),
        ({"url": "ftp://x.example.com", "secret": SECRET}, "url"),
        ({"url": "https://x.example.com"}, "secret"),
        ({"url": "https://x.example.com", "secret": SECRET, "max_batch_size": 0}, "max_batch_size"),
        ({"url": "https://x.example.com", "secret": SECRET, "timeout": -1}, "timeout"),
        ({"url": "https://x.example.com", "secret": SECRET, "retries": 3}, "retries"),
    ]:
        with pytest.raises(ValueError, match=rf"webhook destination: .*'{setting}'") as info:
            cls.from_settings(settings, sync_name="s", base_dir=None)
        assert SECRET not in str(info.value)


def test_local_receiver_cli_verifies_signatures_and_prints_a_line_per_batch() -> None:
    env = {**os.environ, "DEMO_WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "reverse_etl.emulators.webhook", "--port", "0", "--secret-env", "DEMO_WEBHOOK_SECRET"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in banner and "verifying signatures" in banner
        url = banner.split("listening on ", 1)[1].split()[0]
        run = make_run()
        dest = WebhookDestination(url, secret=SECRET, http=fast_config())
        dest.send_batch(run, make_batch("add", users(5), key="demo-1"))
        dest.send_batch(run, make_batch("add", users(5), key="demo-1"))  # a redelivery
        wrong = WebhookDestination(url, secret="not-the-secret", http=fast_config())
        with pytest.raises(DestinationConfigError):
            wrong.send_batch(run, make_batch("remove", users(1), key="demo-2"))
        lines = [process.stdout.readline() for _ in range(3)]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert f"cohort={SYNC} in  users=5 [u0000, u0001, u0002 +2] message_id=demo-1 signature=ok ok" in lines[0]
    assert "duplicate message_id" in lines[1]
    assert "REFUSED 401: signature does not match the body" in lines[2]
    assert process.returncode == 0


def test_receiver_cli_refuses_an_unset_secret_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_SECRET_VAR"}
    done = subprocess.run(
        [sys.executable, "-m", "reverse_etl.emulators.webhook", "--port", "0", "--secret-env", "NO_SUCH_SECRET_VAR"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "NO_SUCH_SECRET_VAR is not set" in done.stderr


def test_random_faults_are_reproducible_from_the_seed() -> None:
    logs = []
    for _ in range(2):
        with WebhookEmulator(secret=SECRET, faults=Faults(seed=7, server_error=0.3, drop_before=0.2, drop_after=0.2)) as flaky:
            dest = destination(flaky)
            dest.sender.config = fast_config(max_attempts=20)
            for n in range(5):
                dest.send_batch(make_run(), make_batch("add", users(2, start=2 * n), key=f"k{n}", sequence=n + 1))
            assert len(flaky.members(SYNC)) == 10 and flaky.duplicate_commits() == {}
            logs.append(list(flaky.fault_log))
    assert logs[0] == logs[1] and set(logs[0]) > {"ok"}
