"""The emulators themselves: what tests rely on them to do (losing records, concurrency, fault settings)."""

from __future__ import annotations

import threading

import httpx
import pytest
from contract_helpers import SYNC, fast_config, make_batch, make_run, users

from reverse_etl import BatchRejectedError
from reverse_etl.destinations.webhook import WebhookDestination
from reverse_etl.emulators.base import Faults
from reverse_etl.emulators.webhook import WebhookEmulator

SECRET = "emulator-test-secret"


def test_silent_record_drops_leave_the_receiver_short_of_the_audience() -> None:
    # A lossy destination acknowledges everything: only comparing what it holds with the audience
    # shows the loss, which is what the end-to-end tests do.
    with WebhookEmulator(secret=SECRET, faults=Faults(seed=3, record_drop=0.5)) as lossy:
        WebhookDestination(lossy.url, secret=SECRET, http=fast_config()).send_batch(make_run(), make_batch("add", users(40)))
        held = lossy.members(SYNC)
    assert 0 < len(held) < 40


def test_concurrent_deliveries_are_all_kept() -> None:
    with WebhookEmulator(secret=SECRET) as receiver:
        def send(n: int) -> None:
            dest = WebhookDestination(receiver.url, secret=SECRET, http=fast_config())
            for k in range(5):
                dest.send_batch(make_run(), make_batch("add", users(3, start=100 * n + 3 * k), key=f"t{n}-{k}"))

        threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(receiver.members(SYNC)) == 60 and len(receiver.committed()) == 20


def test_a_repeated_message_id_is_answered_as_before_and_not_applied_again() -> None:
    with WebhookEmulator(secret=SECRET) as receiver:
        dest = WebhookDestination(receiver.url, secret=SECRET, http=fast_config())
        dest.send_batch(make_run(), make_batch("add", users(2), key="m-1"))
        dest.send_batch(make_run(), make_batch("add", users(2), key="m-1"))  # the same request again
        assert set(receiver.members(SYNC)) == {"u0000", "u0001"}
        assert [d.replayed for d in receiver.deliveries] == [False, True] and receiver.key_conflicts == []


def test_a_key_reused_with_another_body_is_refused_like_stripe_and_the_idempotency_key_draft() -> None:
    with WebhookEmulator(secret=SECRET) as receiver:
        dest = WebhookDestination(receiver.url, secret=SECRET, http=fast_config())
        dest.send_batch(make_run(), make_batch("add", users(2), key="m-1"))
        with pytest.raises(BatchRejectedError, match="422.*idempotency key reused"):
            dest.send_batch(make_run(), make_batch("add", users(1), key="m-1"))  # a smaller batch under the key
        assert receiver.key_conflicts == ["message_id m-1"]
        assert set(receiver.members(SYNC)) == {"u0000", "u0001"} and len(receiver.deliveries) == 1
    with WebhookEmulator(secret=SECRET) as lenient:
        lenient.strict_idempotency = False  # a receiver that only de-duplicates: the second body is dropped unseen
        dest = WebhookDestination(lenient.url, secret=SECRET, http=fast_config())
        dest.send_batch(make_run(), make_batch("add", users(2), key="m-1"))
        dest.send_batch(make_run(), make_batch("remove", users(2), key="m-1"))
        assert set(lenient.members(SYNC)) == {"u0000", "u0001"} and lenient.key_conflicts == ["message_id m-1"]


def test_fault_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="add up to"):
        Faults(server_error=0.6, drop_after=0.6)
    with pytest.raises(ValueError, match="retry_after_style"):
        Faults(retry_after_style="minutes")
    with WebhookEmulator() as receiver, pytest.raises(ValueError, match="unknown fault"):
        receiver.inject("explode")


def test_rate_limit_answers_429_with_the_wait_until_a_slot_frees() -> None:
    with WebhookEmulator(faults=Faults(rate_limit=2, rate_window=5.0)) as receiver:
        answers = [httpx.get(receiver.url + "/") for _ in range(3)]
    # The receiver only takes POSTs (405), but every request counts against the limit.
    assert [a.status_code for a in answers] == [405, 405, 429]
    assert 4.0 < float(answers[2].headers["retry-after"]) <= 5.0


def test_url_only_while_running() -> None:
    receiver = WebhookEmulator()
    with pytest.raises(RuntimeError, match="not started"):
        _ = receiver.url
    with receiver:
        assert receiver.url.startswith("http://127.0.0.1:")
