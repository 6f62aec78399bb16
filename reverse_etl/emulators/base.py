"""A small HTTP server on 127.0.0.1 that behaves like a destination's API, with injectable faults.

Each vendor emulator (webhook, Braze, Facebook, HubSpot, Klaviyo) subclasses :class:`Emulator` and
implements authentication, payload validation and what a request commits. The base gives all of them:

* start / stop from Python, on an ephemeral port (``with BrazeEmulator(...) as api: api.url``);
  stdlib ``ThreadingHTTPServer``: starts in milliseconds, one thread per connection, HTTP/1.1
  keep-alive;
* **faults**, chosen per batch request either from a script (:meth:`Emulator.inject`, exact and
  ordered) or at random with a seeded generator (:class:`Faults`): 5xx, 429 with ``Retry-After``
  (or an HTTP date, or ``RateLimit-Reset``), 400, a connection closed without an answer *before* or
  *after* committing, and an answer held past the client's timeout *after* committing; silent drops
  of single records; a sliding-window rate limit (e.g. Braze's 3,000 requests / 3 s, scaled down);
* **idempotency** like a well-behaved receiver: a second request with the key of a committed one is
  answered with the first answer and commits nothing (:meth:`Emulator.dedupe_key`); and, like
  receivers that follow the HTTP ``Idempotency-Key`` draft or Stripe, a key seen before with another
  body is refused with ``422`` and recorded in :attr:`Emulator.key_conflicts` ("same key, same
  request": a sender must replay exactly what it first sent);
* a thread-safe record of every request (:attr:`Emulator.requests`) and of every delivery
  (:attr:`Emulator.deliveries`: key, records, whether it was a replay), so a test can check that
  nothing was committed twice except under the same key.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

FAULT_KINDS = ("ok", "server_error", "throttle", "bad_request", "drop_before", "drop_after", "timeout")


@dataclass(frozen=True)
class Request:
    """One request as the emulator received it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    received_at: float

    def header(self, name: str) -> str | None:
        """A header value (case-insensitive name)."""
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body.decode("utf-8"))

    def param(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    """An answer: status, body (JSON-encoded when not bytes / str) and headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encode(self) -> bytes:
        """The body bytes."""
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body).encode("utf-8")


@dataclass(frozen=True)
class Delivery:
    """One committed batch (or a replay of one, which committed nothing)."""

    key: str | None
    method: str
    path: str
    operation: str
    records: tuple[str, ...]
    replayed: bool
    at: float


@dataclass
class Faults:
    """Random faults for an emulator, drawn per batch request from a seeded generator.

    Rates are probabilities (0-1) of each fault for a batch request; their sum must be <= 1.

    Parameters
    ----------
    seed
        Seed of the generator: the same seed and requests give the same faults.
    server_error, throttle, bad_request, drop_before, drop_after, timeout
        Rates of: a 5xx (``server_error_status``); a 429 with ``Retry-After``; a 400; the connection
        closed without an answer before committing; closed without an answer after committing; the
        answer held ``timeout_delay`` seconds (past the client's timeout) after committing.
    record_drop
        Share of records acknowledged but silently not stored (a lossy destination).
    retry_after
        Seconds announced with a 429 / 5xx (``None``: no header).
    retry_after_style
        ``"seconds"`` (``Retry-After: 0.05``), ``"http-date"`` (``Retry-After: <date>``, whole
        seconds) or ``"ratelimit-reset"`` (``RateLimit-Reset`` only, as Klaviyo's headers).
    rate_limit, rate_window
        At most ``rate_limit`` requests per ``rate_window`` seconds (all requests, sliding window);
        more are answered 429 with the time until a slot frees.
    """

    seed: int = 0
    server_error: float = 0.0
    throttle: float = 0.0
    bad_request: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    timeout: float = 0.0
    record_drop: float = 0.0
    server_error_status: int = 503
    retry_after: float | None = 0.05
    retry_after_style: str = "seconds"
    timeout_delay: float = 1.0
    rate_limit: int | None = None
    rate_window: float = 1.0

    def __post_init__(self) -> None:
        total = self.server_error + self.throttle + self.bad_request + self.drop_before + self.drop_after + self.timeout
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:g}, more than 1")
        if self.retry_after_style not in ("seconds", "http-date", "ratelimit-reset"):
            raise ValueError(f"retry_after_style must be seconds, http-date or ratelimit-reset, got {self.retry_after_style!r}")

    def draw(self, rng: random.Random) -> str:
        """Pick the fault of one batch request (``"ok"`` for none)."""
        u = rng.random()
        for kind in ("server_error", "throttle", "bad_request", "drop_before", "drop_after", "timeout"):
            rate = getattr(self, kind)
            if u < rate:
                return kind
            u -= rate
        return "ok"


class _Drop:
    """Close the connection without answering."""


DROP = _Drop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    emulator: Emulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: with Nagle's algorithm on, the body then waits for
    # the client's delayed ACK (~40 ms a request). Real API front ends answer in one flush.
    disable_nagle_algorithm = True
    server: _Server

    def _dispatch(self) -> None:
        self.server.emulator._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: tests and the demo print what they need


class Emulator:
    """Base of the destination emulators (see the module docstring).

    Parameters
    ----------
    faults
        Random faults (default: none).
    host, port
        Where to listen; port ``0`` picks a free one.
    strict_idempotency
        Refuse (``422``) a request whose idempotency key was seen before with another body, as
        receivers that follow "same key, same request" do (default). ``False`` accepts it.

    Attributes
    ----------
    requests
        Every request received, in order.
    deliveries
        Every committed batch and every replay of one.
    key_conflicts
        Keys that came again with a different body (each refused with 422 when strict).
    """

    name: ClassVar[str] = "emulator"

    def __init__(
        self, *, faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0, strict_idempotency: bool = True
    ) -> None:
        self.faults = faults or Faults()
        self.strict_idempotency = strict_idempotency
        self.key_conflicts: list[str] = []
        self._bodies: dict[str, str] = {}
        self.host = host
        self.port = port
        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self.deliveries: list[Delivery] = []
        self.fault_log: list[str] = []
        self._script: deque[str] = deque()
        self._rng = random.Random(self.faults.seed)
        self._record_rng = random.Random(self.faults.seed + 1)
        self._window: deque[float] = deque()
        self._replies: dict[str, tuple[Reply, Delivery | None]] = {}
        self._last_delivery: Delivery | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start serving in a background thread; returns ``self``."""
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.emulator = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.name}-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port (answers still being held are abandoned)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError(f"{self.name} emulator is not started")
        return f"http://{self.host}:{self.port}"

    # --- faults --------------------------------------------------------------------------------

    def inject(self, *kinds: str) -> None:
        """Script the faults of the next batch requests, in order (``"ok"`` for a normal answer).

        Kinds: ``server_error``, ``throttle``, ``bad_request``, ``drop_before``, ``drop_after``,
        ``timeout``. Scripted faults come before random ones.
        """
        for kind in kinds:
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self.lock:
            self._script.extend(kinds)

    def keep_record(self) -> bool:
        """False when a record is to be silently dropped (``Faults.record_drop``)."""
        if self.faults.record_drop <= 0:
            return True
        with self.lock:
            return self._record_rng.random() >= self.faults.record_drop

    # --- for subclasses ------------------------------------------------------------------------

    def is_batch(self, request: Request) -> bool:
        """Whether faults apply to this request (default: every request with a body)."""
        return request.method in ("POST", "PUT", "PATCH", "DELETE")

    def authenticate(self, request: Request) -> Reply | None:
        """``None`` when the request is authorised, else the refusal (default: no auth)."""
        return None

    def dedupe_key(self, request: Request) -> str | None:
        """The key a repeat of this request is recognised by (default: the ``Idempotency-Key`` header)."""
        key = request.header("idempotency-key")
        return f"{request.method} {request.path} {key}" if key else None

    def handle(self, request: Request) -> Reply:
        """Validate and commit the request (called under :attr:`lock`)."""
        return Reply(404, {"error": f"no route {request.method} {request.path}"})

    def replayed(self, request: Request, reply: Reply) -> None:
        """Called when a request repeats a committed one's key (answered as before, nothing committed)."""

    def record_delivery(self, request: Request, operation: str, records: Iterable[str]) -> Delivery:
        """Note a committed batch (call from :meth:`handle` when it commits)."""
        delivery = Delivery(
            key=self.dedupe_key(request), method=request.method, path=request.path, operation=operation,
            records=tuple(records), replayed=False, at=time.monotonic(),
        )
        with self.lock:
            self.deliveries.append(delivery)
            self._last_delivery = delivery
        return delivery

    def throttle_reply(self, wait: float | None, *, message: str = "rate limit exceeded") -> Reply:
        """A 429 announcing ``wait`` seconds in the configured style."""
        return Reply(429, {"error": message}, self.wait_headers(wait))

    def wait_headers(self, wait: float | None) -> dict[str, str]:
        """Headers telling the client how long to wait."""
        if wait is None:
            return {}
        style = self.faults.retry_after_style
        if style == "http-date":
            return {"Retry-After": email.utils.formatdate(time.time() + max(1.0, wait), usegmt=True)}
        if style == "ratelimit-reset":
            return {"RateLimit-Reset": f"{wait:.3f}".rstrip("0").rstrip("."), "RateLimit-Remaining": "0"}
        return {"Retry-After": f"{wait:.3f}".rstrip("0").rstrip(".") or "0"}

    # --- serving -------------------------------------------------------------------------------

    def _rate_limited(self, now: float) -> float | None:
        limit = self.faults.rate_limit
        if not limit:
            return None
        with self.lock:
            window = self.faults.rate_window
            while self._window and now - self._window[0] >= window:
                self._window.popleft()
            if len(self._window) >= limit:
                return max(0.001, window - (now - self._window[0]))
            self._window.append(now)
        return None

    def _next_fault(self) -> str:
        with self.lock:
            kind = self._script.popleft() if self._script else self.faults.draw(self._rng)
            self.fault_log.append(kind)
            return kind

    def _key_conflict(self, request: Request) -> Reply | None:
        """The refusal of a key reused with another body (the first body seen under a key is the one)."""
        key = self.dedupe_key(request)
        if key is None:
            return None
        digest = hashlib.sha256(request.body).hexdigest()
        with self.lock:
            first = self._bodies.setdefault(key, digest)
            if first == digest:
                return None
            self.key_conflicts.append(key)
        if not self.strict_idempotency:
            return None
        return Reply(422, {
            "error": "idempotency key reused with a different request body",
            "detail": "a key names one request; send the same body under it, or use a new key",
        })

    def _known_key(self, request: Request) -> bool:
        key = self.dedupe_key(request)
        with self.lock:
            return key is not None and key in self._replies

    def _answer(self, request: Request) -> tuple[Reply | _Drop, float]:
        """The answer and how long to hold it first."""
        wait = self._rate_limited(request.received_at)
        if wait is not None:
            return self.throttle_reply(wait), 0.0
        refused = self.authenticate(request)
        if refused is not None:
            return refused, 0.0
        conflict = self._key_conflict(request)
        if conflict is not None:
            return conflict, 0.0
        fault = self._next_fault() if self.is_batch(request) else "ok"
        if fault == "server_error":
            status = self.faults.server_error_status
            return Reply(status, {"error": "injected server error"}, self.wait_headers(self.faults.retry_after)), 0.0
        if fault == "throttle":
            return self.throttle_reply(self.faults.retry_after), 0.0
        if fault == "bad_request" and not self._known_key(request):
            # Like a real receiver, a batch it already committed is answered as before (below), not
            # refused: refusing it would make the client split and re-send parts under new keys.
            return Reply(400, {"error": "injected bad request"}), 0.0
        if fault == "drop_before":
            return DROP, 0.0
        key = self.dedupe_key(request)
        with self.lock:
            if key is not None and key in self._replies:
                reply, first = self._replies[key]
                if first is not None:
                    self.deliveries.append(
                        Delivery(key=key, method=request.method, path=request.path, operation=first.operation,
                                 records=first.records, replayed=True, at=time.monotonic())
                    )
                self.replayed(request, reply)
            else:
                self._last_delivery = None
                reply = self.handle(request)
                if key is not None and 200 <= reply.status < 300:
                    self._replies[key] = (reply, self._last_delivery)
        if fault == "drop_after":
            return DROP, 0.0
        if fault == "timeout":
            return reply, self.faults.timeout_delay
        return reply, 0.0

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        parts = urlsplit(handler.path)
        request = Request(
            method=handler.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            received_at=time.monotonic(),
        )
        with self.lock:
            self.requests.append(request)
        try:
            answer, hold = self._answer(request)
        except Exception as exc:  # a bug in an emulator must show as a 500, not a hung client
            answer, hold = Reply(500, {"error": f"emulator error: {type(exc).__name__}: {exc}"}), 0.0
        if isinstance(answer, _Drop):
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if hold > 0:
            time.sleep(hold)
        payload = answer.encode()
        try:
            handler.send_response(answer.status)
            if payload:
                handler.send_header("Content-Type", answer.content_type)
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True  # the client gave up (timeout): nothing to do

    # --- helpers for tests ---------------------------------------------------------------------

    def committed(self) -> list[Delivery]:
        """Deliveries that committed (replays left out)."""
        with self.lock:
            return [d for d in self.deliveries if not d.replayed]

    def duplicate_commits(self) -> dict[tuple[str, str], int]:
        """``(operation, record) -> times committed`` for records committed more than once.

        Empty for a client that never sends a record twice except under the same key.
        """
        counts: dict[tuple[str, str], int] = {}
        for delivery in self.committed():
            for record in delivery.records:
                counts[(delivery.operation, record)] = counts.get((delivery.operation, record), 0) + 1
        return {k: v for k, v in counts.items() if v > 1}

    def batch_requests(self, predicate: Callable[[Request], bool] | None = None) -> list[Request]:
        """Requests faults apply to (optionally filtered)."""
        with self.lock:
            return [r for r in self.requests if self.is_batch(r) and (predicate is None or predicate(r))]


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    value = request.header("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
