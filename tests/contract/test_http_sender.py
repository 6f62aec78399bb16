"""The shared HTTP sender against a real server on 127.0.0.1: retries, waits, failure classes, secrets."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from contract_helpers import FakeClock, RecordingSleep, fast_config

from reverse_etl.destinations.base import Secret
from reverse_etl.emulators.base import Emulator, Faults, Reply, Request, bearer_token
from reverse_etl.errors import BatchRejectedError, TransientDestinationError
from reverse_etl.http import (
    DestinationConfigError,
    HttpConfig,
    HttpSender,
    Pacer,
    Settings,
    chunk_indices,
    parse_rate_limit_reset,
    parse_retry_after,
    url_without_credentials,
)

TOKEN = "t0ken-SUPER-SECRET-value"


class EchoApi(Emulator):
    """Commits every POST body to /items; /reject answers 400 quoting the Authorization header back."""

    name: ClassVar[str] = "echo"

    def authenticate(self, request: Request) -> Reply | None:
        return None if bearer_token(request) == TOKEN else Reply(401, {"error": "who are you"})

    def handle(self, request: Request) -> Reply:
        if request.path == "/reject":
            return Reply(400, {"error": "field 'x' is invalid", "you_sent": request.header("authorization")})
        self.record_delivery(request, "post", [request.body.decode()])
        return Reply(200, {"ok": True})


@pytest.fixture
def api() -> Iterator[EchoApi]:
    with EchoApi() as server:
        yield server


def sender_for(clock: FakeClock, config: HttpConfig | None = None, *, random: float = 0.5, token: str = TOKEN) -> HttpSender:
    return HttpSender(
        "echo", config=config or fast_config(), secret_headers={"Authorization": Secret(f"Bearer {token}")},
        secrets=[token], sleep=clock.sleep, random=lambda: random, clock=clock,
    )


def post(sender: HttpSender, api: EchoApi, path: str = "/items", body: bytes = b"batch-1", key: str = "key-1") -> Any:
    return sender.request("POST", api.url + path, content=body, idempotency_key=key, what="batch 1")


def test_server_errors_and_broken_connections_are_retried_under_one_idempotency_key(api: EchoApi) -> None:
    clock = FakeClock()
    sender = sender_for(clock, fast_config(max_attempts=5))
    api.inject("server_error", "drop_before", "drop_after", "throttle")
    response = post(sender, api)
    assert response.status_code == 200
    requests = api.batch_requests()
    assert len(requests) == 5
    assert {r.header("idempotency-key") for r in requests} == {"key-1"}
    # Committed once (at the drop after commit); the retry after it was answered as a replay.
    assert [(d.key is not None, d.replayed) for d in api.deliveries] == [(True, False), (True, True)]
    assert api.duplicate_commits() == {}
    stats = sender.stats
    assert (stats.requests, stats.retries, stats.server_errors, stats.throttled, stats.connection_errors) == (5, 4, 1, 1, 2)


def test_retry_after_seconds_is_honoured_and_never_shortened_by_jitter(api: EchoApi) -> None:
    api.faults.retry_after = 0.2
    api.inject("throttle", "server_error")
    clock = FakeClock()
    post(sender_for(clock, random=0.0), api)
    assert clock.sleeps == [0.2, 0.2]  # jitter alone would have waited 0


def test_retry_after_as_an_http_date_is_honoured() -> None:
    with EchoApi(faults=Faults(retry_after=2.0, retry_after_style="http-date")) as api:
        api.inject("throttle")
        clock = FakeClock()
        post(sender_for(clock, random=0.0), api)
    # An HTTP date has whole seconds: between 1 and 3 s from when it was written.
    assert len(clock.sleeps) == 1 and 1.0 <= clock.sleeps[0] <= 3.0


def test_rate_limit_reset_is_used_when_there_is_no_retry_after() -> None:
    with EchoApi(faults=Faults(retry_after=0.3, retry_after_style="ratelimit-reset")) as api:
        api.inject("throttle")
        clock = FakeClock()
        post(sender_for(clock, random=0.0), api)
    assert clock.sleeps == [0.3]


def test_a_real_rate_limit_window_is_waited_out_not_hammered() -> None:
    # 3 requests per 0.5 s, as Braze's 3,000 / 3 s scaled down; the client is not paced, so it runs
    # into the limit and must wait what the server announces each time.
    with EchoApi(faults=Faults(rate_limit=3, rate_window=0.5)) as api:
        sleep = RecordingSleep()
        sender = HttpSender(
            "echo", config=fast_config(max_attempts=10), secret_headers={"Authorization": Secret(f"Bearer {TOKEN}")},
            sleep=sleep, random=lambda: 0.0,
        )
        for n in range(7):
            sender.request("POST", api.url + "/items", content=f"b{n}".encode(), idempotency_key=f"k{n}")
    assert len(api.committed()) == 7 and api.duplicate_commits() == {}
    assert sender.stats.throttled >= 1 and len(api.requests) == 7 + sender.stats.throttled
    # Every wait after a 429 was at least what the server asked for (> 0), never a blind 0 s retry.
    assert len(sleep.sleeps) == sender.stats.throttled and all(s > 0 for s in sleep.sleeps)


def test_persistent_server_errors_end_in_a_transient_error_carrying_retry_after(api: EchoApi, caplog: pytest.LogCaptureFixture) -> None:
    api.faults.retry_after = 0.05
    api.inject(*["server_error"] * 4)
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="reverse_etl.http"), pytest.raises(TransientDestinationError) as info:
        post(sender_for(clock), api)
    assert len(api.batch_requests()) == 4  # max_attempts
    assert info.value.retry_after == pytest.approx(0.05)
    assert "after 4 attempt(s)" in str(info.value) and "HTTP 503" in str(info.value)
    assert api.committed() == []
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 3 and all(r.levelno == logging.INFO for r in retries)
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_a_retry_after_beyond_the_wait_budget_gives_up_at_once(api: EchoApi) -> None:
    api.faults.retry_after = 30.0
    api.inject("throttle")
    clock = FakeClock()
    with pytest.raises(TransientDestinationError) as info:
        post(sender_for(clock, fast_config(max_total_wait=5.0)), api)
    assert info.value.retry_after == pytest.approx(30.0)
    assert clock.sleeps == [] and len(api.batch_requests()) == 1


def test_timeout_after_the_server_committed_is_retried_and_applied_once() -> None:
    with EchoApi(faults=Faults(timeout_delay=0.6)) as api:
        api.inject("timeout")
        clock = FakeClock()
        sender = sender_for(clock, fast_config(read_timeout=0.2))
        assert post(sender, api).status_code == 200
        assert sender.stats.timeouts == 1
        assert [d.replayed for d in api.deliveries] == [False, True]
        assert {r.header("idempotency-key") for r in api.batch_requests()} == {"key-1"}


def test_connect_failure_is_retried_then_transient() -> None:
    with EchoApi() as api:
        url = api.url
    clock = FakeClock()
    sender = sender_for(clock, fast_config(max_attempts=2))
    with pytest.raises(TransientDestinationError, match="connection failed"):
        sender.request("POST", url + "/items", content=b"x", idempotency_key="k")
    assert sender.stats.connection_errors == 2


def test_permanent_4xx_is_a_batch_rejection_with_status_and_excerpt_but_no_secret(
    api: EchoApi, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    with caplog.at_level(logging.DEBUG), pytest.raises(BatchRejectedError) as info:
        post(sender_for(clock), api, path="/reject")
    error = info.value
    assert error.status == 400 and "field 'x' is invalid" in error.reason and error.reason.startswith("HTTP 400")
    assert len(api.batch_requests()) == 1  # never retried
    # The server quoted our Authorization header back: it must not travel on.
    assert TOKEN not in str(error) and TOKEN not in error.reason and "***" in error.reason
    assert TOKEN not in caplog.text


def test_unauthorised_is_a_configuration_error_not_a_rejection(api: EchoApi) -> None:
    clock = FakeClock()
    with pytest.raises(DestinationConfigError) as info:
        post(sender_for(clock, token="wrong-token"), api)
    assert info.value.status == 401 and not isinstance(info.value, BatchRejectedError)
    assert "wrong-token" not in str(info.value) and len(api.batch_requests()) == 1


def test_full_jitter_backoff_grows_exponentially_up_to_the_cap(api: EchoApi) -> None:
    api.faults.retry_after = None
    api.inject(*["server_error"] * 5)
    clock = FakeClock()
    post(sender_for(clock, fast_config(max_attempts=6, base_delay=0.1, max_delay=0.5), random=1.0), api)
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    config = fast_config(base_delay=0.1, max_delay=0.5)
    assert config.backoff(3, lambda: 0.25) == pytest.approx(0.1)


def test_pacer_spaces_requests_at_the_declared_rate(api: EchoApi) -> None:
    clock = FakeClock()
    sender = sender_for(clock, fast_config(max_requests_per_second=4))
    for n in range(5):
        sender.request("POST", api.url + "/items", content=b"x", idempotency_key=f"k{n}")
    # The clock only moves when the pacer sleeps: 4 gaps of 1/4 s.
    assert clock.sleeps == pytest.approx([0.25] * 4)
    assert sender.stats.pacing_wait_seconds == pytest.approx(1.0)


def test_pacer_does_not_wait_when_calls_are_already_slow() -> None:
    clock = FakeClock()
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now += 1.0
    assert pacer.wait() == 0.0 and clock.sleeps == []
    assert Pacer(None, clock=clock, sleep=clock.sleep).wait() == 0.0


def test_idempotency_key_and_signature_are_sent_on_every_attempt(api: EchoApi) -> None:
    api.inject("server_error")
    signed: list[bytes] = []

    def sign(body: bytes) -> dict[str, str]:
        signed.append(body)
        return {"X-Sig": f"sig-{len(signed)}"}

    sender_for(FakeClock()).request("POST", api.url + "/items", content=b"payload", idempotency_key="k-9", sign=sign)
    assert signed == [b"payload", b"payload"]
    assert [(r.header("x-sig"), r.header("idempotency-key")) for r in api.batch_requests()] == [("sig-1", "k-9"), ("sig-2", "k-9")]


def test_sender_repr_and_logs_hold_no_secret(api: EchoApi, caplog: pytest.LogCaptureFixture) -> None:
    api.inject("server_error", "drop_before")
    sender = sender_for(FakeClock())
    with caplog.at_level(logging.DEBUG):
        post(sender, api)
    assert TOKEN not in repr(sender) and TOKEN not in caplog.text
    assert "retry 1 of 3" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), ("0.25", 0.25), (" 3 ", 3.0), ("-5", 0.0), ("soon", None), ("", None), (None, None), ("nan", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date_and_rate_limit_reset() -> None:
    now = time.time()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30))
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0  # in the past
    assert parse_rate_limit_reset("7", now=now) == 7.0
    assert parse_rate_limit_reset(str(int(now) + 12), now=float(int(now))) == 12.0  # a Unix time (Braze)
    assert parse_rate_limit_reset("x", now=now) is None


def test_chunking_by_count_and_bytes() -> None:
    assert [list(r) for r in chunk_indices([1] * 5, max_items=2)] == [[0, 1], [2, 3], [4]]
    # 10-byte items, 25 bytes per chunk with a 2-byte envelope and 1-byte separators: two per chunk.
    assert [list(r) for r in chunk_indices([10] * 5, max_items=100, max_bytes=25, overhead=2)] == [[0, 1], [2, 3], [4]]
    # An item larger than the limit still goes, alone.
    assert [list(r) for r in chunk_indices([5, 100, 5], max_items=10, max_bytes=50)] == [[0], [1], [2]]
    assert list(chunk_indices([], max_items=3)) == []


def test_url_shown_without_credentials_or_query() -> None:
    assert url_without_credentials("https://user:pw@hooks.example.com:8443/a/b?token=x#f") == "https://hooks.example.com:8443/a/b"


def test_http_config_and_settings_errors_name_the_setting() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        HttpConfig(max_attempts=0)
    with pytest.raises(ValueError, match="read_timeout"):
        HttpConfig(read_timeout=0)
    read = Settings({"timeout": "abc"}, destination_type="braze", sync_name="s", allowed=("timeout",))
    with pytest.raises(ValueError, match="braze destination: setting 'timeout' must be a number"):
        read.http_config()
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['api_kye'\]"):
        Settings({"api_kye": "x"}, destination_type="braze", sync_name="s", allowed=("api_key",))
    read = Settings({"api_key": ""}, destination_type="braze", sync_name="s", allowed=("api_key",))
    with pytest.raises(ValueError, match="setting 'api_key' is empty"):
        read.secret("api_key")
    with pytest.raises(ValueError, match=r"BRAZE_API_KEY"):
        Settings({}, destination_type="braze", sync_name="s", allowed=("api_key",)).secret("api_key")
    read = Settings({"url": "https://u:p@x.example.com"}, destination_type="webhook", sync_name="s", allowed=("url",))
    with pytest.raises(ValueError, match="must not carry credentials") as info:
        read.url("url")
    assert ":p@" not in str(info.value)
