"""One HTTP sender for every HTTP destination: timeouts, retries, pacing, failure classes.

A destination describes *what* to send (method, URL, body, which answers mean what); the sender
decides *how often* and *how long to wait*, the same way for all of them:

* **Timeouts**: connect and read (plus write / pool) on an ``httpx.Client``.
* **In-run retries** on 429, 408, 5xx, timeouts and dropped connections, with exponential backoff and
  full jitter (``wait = random() * min(max_delay, base_delay * 2 ** (retry - 1))``), bounded by
  ``max_attempts`` and ``max_total_wait``. A ``Retry-After`` header (seconds or an HTTP date) or, when
  it is absent, a ``RateLimit-Reset`` / ``X-RateLimit-Reset`` header (seconds, or a Unix time) sets
  the wait instead: the sender never retries sooner than the destination asked.
* **Pacing**: at most the destination's declared ``max_requests_per_second``, client-side, so a run
  does not trip the destination's rate limit in the first place.
* **Failure classes** (what the engine does with them):

  ==========================================  =====================================================
  answer                                      raised
  ==========================================  =====================================================
  2xx                                         returned to the destination
  429, 408, 5xx, timeout, dropped connection  retried; then :class:`TransientDestinationError`
  401, 403, 404, 405, 407, 3xx                :class:`DestinationConfigError` (bad key, URL, id):
                                              the run fails, no record is blamed
  any other 4xx (400, 413, 422...)            :class:`BatchRejectedError` with the status and a
                                              short body excerpt: the engine splits the batch
  ==========================================  =====================================================

  A destination can override the class of an answer (e.g. Facebook says "rate limited" with a 400).
* **Idempotency**: every request of one batch carries the batch's key in an ``Idempotency-Key``
  header, on the first attempt and on every retry.
* **No secrets out**: auth headers are added at the last moment and never logged; every message that
  leaves the sender (log line, exception) has the secret values replaced by ``***``, even when the
  destination echoed them in an error body.

:class:`HttpRecordDestination` is the shared base of the HTTP destinations (settings parsing,
idempotency keys, JSON encoding, chunking, the sender's life cycle).
"""

from __future__ import annotations

import base64
import email.utils
import enum
import functools
import hashlib
import json
import logging
import math
import random as _random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, time as dtime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import simplejson

from reverse_etl.destinations.base import ChangeBatch, RecordDestination, RunInfo, Secret
from reverse_etl.errors import BatchRejectedError, DestinationError, TransientDestinationError

logger = logging.getLogger("reverse_etl.http")

EXCERPT_CHARS = 300
USER_AGENT = "cohortflow-reverse-etl/0.1"
# Statuses that mean "the request or the destination is misconfigured", not "this batch is bad":
# blaming the records (splitting the batch down to single records marked as refused) would wrongly
# mark the whole audience as rejected because of one wrong API key.
CONFIG_STATUSES = frozenset({401, 403, 404, 405, 407})
RETRY_STATUSES = frozenset({408, 425, 429})


class _LogScrubber(logging.Filter):
    """Replaces registered values by ``***`` in the records of one logger.

    httpx logs every request's full URL at INFO; a receiver URL may carry a key in its query
    (``?code=...``), so those values are registered here and never printed.
    """

    def __init__(self) -> None:
        super().__init__()
        self._values: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        with self._lock:
            if value and value not in self._values:
                self._values = tuple(sorted({*self._values, value}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        values = self._values
        if values:
            message = record.getMessage()
            scrubbed = message
            for value in values:
                scrubbed = scrubbed.replace(value, "***")
            if scrubbed != message:
                record.msg, record.args = scrubbed, ()
        return True


_URL_SECRETS = _LogScrubber()
logging.getLogger("httpx").addFilter(_URL_SECRETS)
# Query values shorter than this are not taken for keys (``?v=2`` would otherwise blank every "2").
MIN_QUERY_SECRET_CHARS = 6


def register_url_secrets(url: str, redactor: Redactor | None = None) -> None:
    """Treat the query values of ``url`` as secrets: scrubbed from httpx's logs and from ``redactor``'s text."""
    for _, value in parse_qsl(urlsplit(url).query, keep_blank_values=False):
        if len(value) >= MIN_QUERY_SECRET_CHARS:
            _URL_SECRETS.add(value)
            if redactor is not None:
                redactor.add(value)


@functools.lru_cache(maxsize=1)
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context (system-independent CA bundle, as httpx's default) for every client.

    Building one costs ~40 ms; each run opens a client, so they share it.
    """
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class DestinationConfigError(DestinationError):
    """The destination refused the request because of its configuration (key, URL, audience id).

    Not a verdict on the records: the run fails, nothing of the batch is acknowledged or blamed, and
    the next run (with the setting fixed) sends it again.

    Attributes
    ----------
    status
        The HTTP status (``None`` when the destination said so in the body of another status).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Verdict(enum.Enum):
    """What an HTTP answer means for the batch it carried."""

    OK = "ok"
    RETRY = "retry"
    REJECT = "reject"
    CONFIG = "config"


def default_verdict(status: int) -> Verdict:
    """The class of an HTTP status (see the module docstring)."""
    if 200 <= status < 300:
        return Verdict.OK
    if status in RETRY_STATUSES or status >= 500:
        return Verdict.RETRY
    if status in CONFIG_STATUSES or 300 <= status < 400:
        return Verdict.CONFIG
    return Verdict.REJECT


@dataclass(frozen=True)
class HttpConfig:
    """Timeouts, retry policy and pacing of an HTTP destination.

    Parameters
    ----------
    connect_timeout, read_timeout
        Seconds to open a connection / to wait for the answer (also used for write and pool).
    max_attempts
        Tries per request, the first included (1 = never retry).
    base_delay, max_delay
        Backoff before retry *n*: ``random() * min(max_delay, base_delay * 2 ** (n - 1))`` seconds.
    max_total_wait
        Most seconds spent waiting between the attempts of one request; a ``Retry-After`` that would
        go past it ends the retries at once (the error carries it as ``retry_after``).
    max_requests_per_second
        Client-side pace; ``None`` uses the destination's declared rate, ``0`` disables pacing.
    """

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_wait: float = 120.0
    max_requests_per_second: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("base_delay", "max_delay", "max_total_wait"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        rate = self.max_requests_per_second
        if rate is not None and (not _is_number(rate) or rate < 0):
            raise ValueError(f"max_requests_per_second must be a number >= 0, got {rate!r}")

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        """Full-jitter wait before retry number ``retry`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(retry - 1, 62))
        return random() * ceiling

    def timeout(self) -> httpx.Timeout:
        """The ``httpx.Timeout`` for these settings."""
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class HttpStats:
    """Counters of one sender, for benchmarks and run metadata (never reset by the sender)."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    rejected: int = 0
    retry_wait_seconds: float = 0.0
    pacing_wait_seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        """Plain values (for JSON / metadata)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Pacer:
    """Spaces calls at least ``1 / rate`` seconds apart (thread-safe).

    Parameters
    ----------
    rate
        Calls per second; ``None`` or ``0`` never waits.
    clock, sleep
        Monotonic clock and sleep (injectable for tests).
    """

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until the next call is allowed; return the seconds waited."""
        if self.interval <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
            return delay
        return 0.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds (``"120"``, ``"0.5"``) or an HTTP date.

    Returns ``None`` when absent or unreadable; never negative.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        current = time.time() if now is None else now
        return max(0.0, moment.timestamp() - current)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def parse_rate_limit_reset(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``RateLimit-Reset`` / ``X-RateLimit-Reset`` value.

    The IETF draft and Klaviyo send seconds until the window resets; Braze and others send the Unix
    time of the reset. A value above 10^9 is read as a Unix time.
    """
    if value is None:
        return None
    text = value.strip().split(",")[0].split(";")[0].strip()
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if number > 1e9:
        current = time.time() if now is None else now
        return max(0.0, number - current)
    return max(0.0, number)


def requested_wait(response: httpx.Response, *, now: float | None = None) -> float | None:
    """How long the destination asked to wait before the next request, when it said so."""
    retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
    if retry_after is not None:
        return retry_after
    for header in ("ratelimit-reset", "x-ratelimit-reset"):
        reset = parse_rate_limit_reset(response.headers.get(header), now=now)
        if reset is not None:
            return reset
    return None


class Redactor:
    """Replaces secret values by ``***`` in text that may leave the process."""

    def __init__(self, secrets: Sequence[Secret | str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            raw = secret.reveal() if isinstance(secret, Secret) else secret
            if raw:
                values.add(raw)
        # Longest first, so a secret containing another is replaced whole.
        self._values = sorted(values, key=len, reverse=True)

    def add(self, secret: Secret | str) -> None:
        """Also redact ``secret`` from now on."""
        raw = secret.reveal() if isinstance(secret, Secret) else secret
        if raw and raw not in self._values:
            self._values = sorted([*self._values, raw], key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, "***")
        return text


def body_excerpt(response: httpx.Response, limit: int = EXCERPT_CHARS) -> str:
    """The start of a response body as one line of text (for error reasons)."""
    try:
        text = response.content[: limit * 4].decode("utf-8", errors="replace")
    except httpx.ResponseNotRead:  # pragma: no cover - responses are always read here
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def url_without_credentials(url: str) -> str:
    """The URL without user-info, query and fragment (they may carry tokens), for logs and ``location``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class _Attempt:
    """What one failed attempt tells the retry loop."""

    description: str
    wait_hint: float | None = None


class HttpSender:
    """Sends requests for one destination, with the retry, pacing and failure rules of this module.

    Parameters
    ----------
    destination
        Name used in messages (``"braze"``, ``"webhook https://hooks.example.com/cohorts"``).
    config
        Timeouts, retry policy and pace.
    max_requests_per_second
        The destination's declared rate, used when ``config.max_requests_per_second`` is ``None``.
    headers
        Headers sent with every request (no secrets).
    secret_headers
        Headers whose values are secrets (``{"Authorization": Secret("Bearer ...")}``); added to each
        request at the last moment and redacted from every message.
    secrets
        Further secret values to redact (e.g. the bare API key inside a ``Bearer`` header).
    sleep, random, clock
        Injectable for tests: ``sleep(seconds)``, ``random() -> [0, 1)``, a monotonic clock.
    transport
        An ``httpx`` transport (tests may pass one; the default is a real connection pool).

    Attributes
    ----------
    stats
        Counters (:class:`HttpStats`).
    """

    def __init__(
        self,
        destination: str,
        *,
        config: HttpConfig | None = None,
        max_requests_per_second: float | None = None,
        headers: Mapping[str, str] | None = None,
        secret_headers: Mapping[str, Secret] | None = None,
        secrets: Sequence[Secret | str] = (),
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.destination = destination
        self.config = config or HttpConfig()
        rate = self.config.max_requests_per_second
        if rate is None:
            rate = max_requests_per_second
        self.pacer = Pacer(rate or None, clock=clock, sleep=sleep)
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._secret_headers = dict(secret_headers or {})
        self.redact = Redactor([*self._secret_headers.values(), *secrets])
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self.stats = HttpStats()

    def __repr__(self) -> str:
        return f"HttpSender({self.destination!r})"

    @property
    def client(self) -> httpx.Client:
        """The ``httpx.Client`` (opened on first use, reopened after :meth:`close`)."""
        with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = httpx.Client(
                    timeout=self.config.timeout(),
                    verify=shared_ssl_context(),
                    transport=self._transport,
                    follow_redirects=False,
                    headers=self.headers,
                )
            return self._client

    def close(self) -> None:
        """Close the connection pool (a later request opens a new one)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> HttpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        what: str = "request",
        classify: Callable[[httpx.Response], Verdict | None] | None = None,
        sign: Callable[[bytes], Mapping[str, str]] | None = None,
    ) -> httpx.Response:
        """Send one request until it gets a usable answer, or raise the class of its failure.

        Parameters
        ----------
        method, url
            The request (``url`` absolute).
        content
            The body, sent unchanged on every attempt.
        headers, params
            Extra headers (no secrets) and query parameters.
        idempotency_key
            Sent as ``Idempotency-Key`` on every attempt.
        what
            Names the request in messages (``"batch 3 (add, 75 records)"``).
        classify
            Optional override: return a :class:`Verdict` for a response, or ``None`` for the default
            class of its status.
        sign
            Called with the body before each attempt; returns headers to add (a signature with a
            fresh timestamp).

        Returns
        -------
        httpx.Response
            A response classed :attr:`Verdict.OK`.

        Raises
        ------
        TransientDestinationError
            Still 429 / 408 / 5xx / timeout / dropped connection after the retries.
        BatchRejectedError
            A permanent refusal of the request (4xx other than the ones below).
        DestinationConfigError
            401 / 403 / 404 / 405 / 407 or a redirect: a setting is wrong.
        """
        register_url_secrets(url, self.redact)
        request_headers: dict[str, str] = dict(headers or {})
        if idempotency_key:
            request_headers["Idempotency-Key"] = idempotency_key
        shown_url = url_without_credentials(url)
        label = f"{self.destination}: {what}"
        waited = 0.0
        last: _Attempt | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            if attempt > 1:
                assert last is not None
                # The destination's own Retry-After / RateLimit-Reset wins over our backoff: waiting
                # longer than asked only loses throughput at a rate limit, shorter draws another 429.
                delay = last.wait_hint if last.wait_hint is not None else self.config.backoff(attempt - 1, self._random)
                if waited + delay > self.config.max_total_wait:
                    self._give_up(label, last, attempt - 1, reason="waiting longer would pass max_total_wait")
                logger.info(
                    "%s: %s; retry %d of %d in %.2f s%s",
                    label, last.description, attempt - 1, self.config.max_attempts - 1, delay,
                    " (as the destination asked)" if last.wait_hint is not None else "",
                )
                self.stats.retries += 1
                self.stats.retry_wait_seconds += delay
                waited += delay
                if delay > 0:
                    self._sleep(delay)
            self.stats.pacing_wait_seconds += self.pacer.wait()
            attempt_headers = dict(request_headers)
            if sign is not None:
                attempt_headers.update(sign(content or b""))
            attempt_headers.update({k: v.reveal() for k, v in self._secret_headers.items()})
            self.stats.requests += 1
            try:
                response = self.client.request(method, url, content=content, headers=attempt_headers, params=params)
            except httpx.TimeoutException as exc:
                self.stats.timeouts += 1
                last = _Attempt(f"{type(exc).__name__} after {self._timeout_of(exc):g} s ({shown_url})")
                continue
            except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
                self.stats.connection_errors += 1
                detail = self.redact(str(exc)) or type(exc).__name__
                last = _Attempt(f"connection failed: {type(exc).__name__}: {detail} ({shown_url})")
                continue
            verdict = (classify(response) if classify is not None else None) or default_verdict(response.status_code)
            if verdict is Verdict.OK:
                return response
            excerpt = self.redact(body_excerpt(response))
            status = response.status_code
            if verdict is Verdict.RETRY:
                if status == 429:
                    self.stats.throttled += 1
                elif status >= 500:
                    self.stats.server_errors += 1
                last = _Attempt(f"HTTP {status} {excerpt}".rstrip(), requested_wait(response))
                continue
            if verdict is Verdict.CONFIG:
                raise DestinationConfigError(
                    f"{label} refused with HTTP {status} by {shown_url}: {excerpt or response.reason_phrase} "
                    "(check the destination's settings: key, URL, ids)",
                    status=status,
                )
            self.stats.rejected += 1
            reason = f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status} {response.reason_phrase}"
            raise BatchRejectedError(f"{label} rejected by {shown_url}: {reason}", reason=reason, status=status)
        assert last is not None
        self._give_up(label, last, self.config.max_attempts, reason="no attempts left")
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout_of(self, exc: httpx.TimeoutException) -> float:
        if isinstance(exc, httpx.ConnectTimeout):
            return self.config.connect_timeout
        return self.config.read_timeout

    def _give_up(self, label: str, last: _Attempt, attempts: int, *, reason: str) -> None:
        message = (
            f"{label} failed after {attempts} attempt(s) ({reason}): {last.description}. "
            "Nothing of it counts as delivered; the next run sends it again under the same idempotency key."
        )
        logger.warning("%s", message)
        raise TransientDestinationError(message, retry_after=last.wait_hint)


# --- shared base of the HTTP destinations -------------------------------------------------------


def json_default(value: Any) -> Any:
    """JSON for the values a warehouse record can hold: times as ISO 8601 (UTC ``Z``), decimals as numbers.

    :func:`encode_json` / :func:`dumps_json` write a ``Decimal`` themselves, digit for digit; the
    ``Decimal`` branch here only serves a plain ``json.dumps(..., default=json_default)``, which can
    only write a float (stdlib ``json`` has no way to write a number's own digits).
    """
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, (date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_json(payload: Any) -> bytes:
    """Compact UTF-8 JSON (non-finite floats become ``null``: JSON has no NaN).

    Money is exact: a ``Decimal`` (what a warehouse ``decimal`` / ``numeric`` column gives) is written
    as a JSON number with its own digits, without trailing zeros (``Decimal('0.300000')`` -> ``0.3``,
    ``Decimal('20.000000')`` -> ``20``, 18 or 38 significant digits kept), never through a float.
    """
    return dumps_json(payload).encode("utf-8")


def dumps_json(payload: Any, *, ensure_ascii: bool = False) -> str:
    """Compact JSON text, as :func:`encode_json` writes it (decimals exact, NaN / infinity as ``null``).

    Python's ``json`` writes a float with ``float.__repr__`` and has no hook for a number's own text,
    so a ``Decimal`` would have to become a float; ``simplejson`` (``use_decimal``) writes ``str()``
    of it and is otherwise byte-for-byte what ``json.dumps`` writes for the same options.
    """
    return simplejson.dumps(
        _json_ready(payload), default=json_default, ensure_ascii=ensure_ascii, separators=(",", ":"),
        use_decimal=True, namedtuple_as_object=False,
    )


def exact_decimal(value: Decimal) -> int | Decimal | None:
    """``value`` in its shortest exact form: an ``int`` when whole, else without trailing zeros; ``None``
    when not finite. No arithmetic context is involved, so no digit is ever rounded away."""
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return int(value)
    sign, digits, exponent = value.as_tuple()
    kept = list(digits)
    while kept[-1] == 0:  # a non-whole value has a non-zero digit after the point: this stops there
        kept.pop()
        exponent += 1
    return Decimal((sign, tuple(kept), exponent))


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal):
        return exact_decimal(value)
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (what :func:`encode_json` would write)."""
    return json.loads(encode_json(value))


def batch_idempotency_key(run: RunInfo, batch: ChangeBatch) -> str:
    """The batch's idempotency key; when the engine set none, one derived from the run and the batch.

    The fallback is stable across the in-run retries (the receiver still drops a retried duplicate),
    and includes the run id, so a later run that sends the same content again (added, removed,
    added back) is never mistaken for a duplicate.
    """
    if batch.idempotency_key:
        return batch.idempotency_key
    digest = hashlib.sha256()
    for part in (run.sync_name, run.run_id, batch.operation.value, str(batch.sequence), *batch.keys):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return f"{run.sync_name}-{digest.hexdigest()[:32]}"


def chunk_key(key: str, index: int, count: int) -> str:
    """The idempotency key of request ``index`` (0-based) of a batch sent as ``count`` requests."""
    return key if count == 1 else f"{key}.{index + 1}of{count}"


def chunk_indices(sizes: Sequence[int], *, max_items: int, max_bytes: int | None = None, overhead: int = 0) -> Iterator[range]:
    """Split items into consecutive ranges of at most ``max_items`` items and ``max_bytes`` bytes.

    ``sizes`` are the encoded size of each item; ``overhead`` is the size of the envelope around
    them. An item larger than ``max_bytes`` on its own still goes alone (the destination judges it).
    """
    start, total = 0, overhead
    for index, size in enumerate(sizes):
        count = index - start
        if count and (count >= max_items or (max_bytes is not None and total + size + 1 > max_bytes)):
            yield range(start, index)
            start, total = index, overhead
        total += size + 1
    if start < len(sizes):
        yield range(start, len(sizes))


class Settings:
    """Reads a ``destinations.yml`` entry for one destination type, naming the setting in every error.

    Parameters
    ----------
    settings
        The entry (secrets already resolved from the environment).
    destination_type
        The ``type`` (``braze``), used in messages.
    sync_name
        The sync being configured (kept for defaults such as a cohort name).
    allowed
        Every setting this type understands; any other key is refused (a typo must not be ignored).
    """

    # Keys of the entry that describe it rather than configure the destination.
    ENTRY_KEYS: ClassVar[frozenset[str]] = frozenset({"type"})

    def __init__(
        self, settings: Mapping[str, Any], *, destination_type: str, sync_name: str | None, allowed: Sequence[str]
    ) -> None:
        self.destination_type = destination_type
        self.sync_name = sync_name
        if not isinstance(settings, Mapping):
            raise ValueError(f"{self._where()} settings must be a mapping, got {type(settings).__name__}")
        self.values = settings
        unknown = sorted(set(settings) - set(allowed) - self.ENTRY_KEYS)
        if unknown:
            raise ValueError(f"{self._where()}: unknown setting(s) {unknown}; allowed: {sorted(allowed)}")

    def _where(self) -> str:
        # The declaration loader puts the file and the destination's name in front.
        return f"{self.destination_type} destination"

    def error(self, name: str, problem: str) -> ValueError:
        """A ``ValueError`` naming the sync, the destination type and the setting."""
        return ValueError(f"{self._where()}: setting {name!r} {problem}")

    def string(self, name: str, *, default: str | None = None, required: bool = False) -> str | None:
        """A non-empty text setting."""
        value = self.values.get(name)
        if value is None:
            if required:
                raise self.error(name, "is required")
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"must be a non-empty text, got {type(value).__name__}")
        return value.strip()

    def secret(self, name: str) -> Secret:
        """A required secret: a ``Secret`` or a plain text (wrapped). Never shown in the message."""
        value = self.values.get(name)
        if isinstance(value, Secret):
            return value
        if value is None:
            raise self.error(
                name, f"is required; put \"{{{{ env_var('{self.destination_type.upper()}_{name.upper()}') }}}}\" in destinations.yml "
                "and set that environment variable (never the value itself)"
            )
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, "is empty (is the environment variable named in destinations.yml set?)")
        return Secret(value.strip())

    def url(self, name: str, *, default: str | None = None) -> str:
        """An absolute http(s) URL, without a trailing slash."""
        value = self.string(name, default=default, required=default is None)
        assert value is not None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(name, f"must be an http(s) URL like 'https://api.example.com', got {url_without_credentials(value)!r}")
        if parts.username or parts.password:
            raise self.error(name, "must not carry credentials (user:password@); use the secret settings")
        return value.rstrip("/")

    def number(self, name: str, *, default: float | None, minimum: float = 0.0, exclusive: bool = False) -> float | None:
        """A finite number ``>= minimum`` (``> minimum`` when ``exclusive``)."""
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.error(name, f"must be a number, got {value!r}") from None
        if not _is_number(value) or value < minimum or (exclusive and value == minimum):
            bound = ">" if exclusive else ">="
            raise self.error(name, f"must be a number {bound} {minimum:g}, got {value!r}")
        return float(value)

    def integer(self, name: str, *, default: int, minimum: int = 1, maximum: int | None = None) -> int:
        """An integer within bounds."""
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
            upper = f" and <= {maximum:,}" if maximum is not None else ""
            raise self.error(name, f"must be an integer >= {minimum}{upper}, got {value!r}")
        return value

    def http_config(self, *, read_timeout: float = 30.0) -> HttpConfig:
        """The common HTTP settings (see :data:`HTTP_SETTINGS`)."""
        return HttpConfig(
            connect_timeout=self.number("connect_timeout", default=5.0, exclusive=True) or 5.0,
            read_timeout=self.number("timeout", default=read_timeout, exclusive=True) or read_timeout,
            max_attempts=self.integer("max_attempts", default=5, minimum=1, maximum=100),
            base_delay=self.number("retry_base_delay", default=0.5) or 0.0,
            max_delay=self.number("retry_max_delay", default=30.0) or 0.0,
            max_total_wait=self.number("max_retry_wait", default=120.0) or 0.0,
            max_requests_per_second=self.number("max_requests_per_second", default=None),
        )


# Settings every HTTP destination understands (see docs/destinations.md).
HTTP_SETTINGS: tuple[str, ...] = (
    "timeout",
    "connect_timeout",
    "max_attempts",
    "retry_base_delay",
    "retry_max_delay",
    "max_retry_wait",
    "max_requests_per_second",
)


@dataclass
class SenderOptions:
    """Test hooks passed through to :class:`HttpSender` (``sleep``, ``random``, ``clock``, ``transport``)."""

    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = _random.random
    clock: Callable[[], float] = time.monotonic
    transport: httpx.BaseTransport | None = None


class HttpRecordDestination(RecordDestination):
    """Shared base of the HTTP destinations: one :class:`HttpSender`, closed when a run finishes.

    Subclasses set the class attributes, build ``self.sender`` through :meth:`_make_sender` and
    implement ``send_batch``.
    """

    kind: ClassVar[str] = "http"

    sender: HttpSender

    def _make_sender(
        self,
        label: str,
        config: HttpConfig | None,
        *,
        headers: Mapping[str, str] | None = None,
        secret_headers: Mapping[str, Secret] | None = None,
        secrets: Sequence[Secret] = (),
        options: SenderOptions | None = None,
    ) -> HttpSender:
        opts = options or SenderOptions()
        config = config or HttpConfig()
        if config.max_requests_per_second is not None:
            # The instance's declared rate is the one in use (the engine and the UI read it).
            self.max_requests_per_second = config.max_requests_per_second or None  # type: ignore[misc]
        return HttpSender(
            label,
            config=config,
            max_requests_per_second=type(self).max_requests_per_second,
            headers=headers,
            secret_headers=secret_headers,
            secrets=secrets,
            sleep=opts.sleep,
            random=opts.random,
            clock=opts.clock,
            transport=opts.transport,
        )

    @property
    def stats(self) -> HttpStats:
        """The sender's counters (requests, retries, 429s...)."""
        return self.sender.stats

    def finish(self, run: RunInfo, *, succeeded: bool) -> None:
        """Close the connection pool at the end of a run."""
        self.sender.close()

    def close(self) -> None:
        """Close the connection pool (also done at the end of every run)."""
        self.sender.close()
