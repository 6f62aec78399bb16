"""A cohort-webhook receiver (Amplitude's payload), for contract tests and as the demo's local receiver.

It checks what a careful receiver checks — the HMAC-SHA256 signature over ``<timestamp>.<raw body>``
and the timestamp's age, the payload's shape, the batch cap — and de-duplicates on ``message_id``:
a batch delivered again under the same ``message_id`` is answered as before and applied once.

Run it as the local webhook receiver of the demo::

    export WEBHOOK_SECRET=change-me
    python -m reverse_etl.emulators.webhook --port 8787 --secret-env WEBHOOK_SECRET

It prints one line per batch (time, cohort, in/out, users, message id, signature verdict).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar

from reverse_etl.emulators.base import Emulator, Faults, Reply, Request

SIGNATURE_HEADER = "x-cohortflow-signature"
TIMESTAMP_HEADER = "x-cohortflow-timestamp"
REQUIRED_KEYS = ("cohort_name", "cohort_id", "in_cohort", "computed_time", "message_id", "users")


class WebhookEmulator(Emulator):
    """Receives cohort-webhook batches and keeps each cohort's members.

    Parameters
    ----------
    secret
        Shared secret for the signature; ``None`` accepts unsigned batches.
    max_users
        Most users per batch (more is a 413).
    tolerance
        Most seconds between the signed timestamp and now (replay protection).
    poison_user_ids
        Users whose presence makes the whole batch a 400 (to test splitting a rejected batch).
    on_batch
        Called after each batch is handled: ``on_batch(payload_or_None, status, reason)``.
    faults, host, port
        See :class:`~reverse_etl.emulators.base.Emulator`.

    Attributes
    ----------
    cohorts
        ``cohort_id -> user_id -> user_properties`` as the batches left them.
    """

    name: ClassVar[str] = "webhook"

    def __init__(
        self,
        *,
        secret: str | None = None,
        max_users: int = 10_000,
        tolerance: float = 300.0,
        poison_user_ids: Iterable[str] = (),
        on_batch: Callable[[dict[str, Any] | None, int, str], None] | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(faults=faults, host=host, port=port)
        self.secret = secret
        self.max_users = max_users
        self.tolerance = tolerance
        self.poison_user_ids = set(poison_user_ids)
        self.on_batch = on_batch
        self.cohorts: dict[str, dict[str, dict[str, Any]]] = {}
        self.signature_failures = 0

    def members(self, cohort_id: str) -> dict[str, dict[str, Any]]:
        """A copy of one cohort's members (user_id -> user_properties)."""
        with self.lock:
            return {k: dict(v) for k, v in self.cohorts.get(cohort_id, {}).items()}

    def is_batch(self, request: Request) -> bool:
        return request.method == "POST"

    def _report(self, payload: dict[str, Any] | None, status: int, reason: str) -> None:
        if self.on_batch is not None:
            self.on_batch(payload, status, reason)

    def authenticate(self, request: Request) -> Reply | None:
        if self.secret is None or request.method != "POST":
            return None
        problem = verify_signature(self.secret, request.header(TIMESTAMP_HEADER), request.header(SIGNATURE_HEADER),
                                   request.body, tolerance=self.tolerance)
        if problem is None:
            return None
        with self.lock:
            self.signature_failures += 1
        self._report(None, 401, problem)
        return Reply(401, {"error": problem})

    def replayed(self, request: Request, reply: Reply) -> None:
        if self.on_batch is not None:
            try:
                payload = request.json()
            except ValueError:
                return
            self.on_batch(payload, reply.status, "duplicate message_id: answered as before, not applied again")

    def dedupe_key(self, request: Request) -> str | None:
        try:
            payload = request.json()
        except ValueError:
            return None
        message_id = payload.get("message_id") if isinstance(payload, dict) else None
        return f"message_id {message_id}" if isinstance(message_id, str) and message_id else None

    def handle(self, request: Request) -> Reply:
        if request.method != "POST":
            return Reply(405, {"error": "POST a cohort batch"})
        try:
            payload = request.json()
        except ValueError:
            self._report(None, 400, "body is not JSON")
            return Reply(400, {"error": "body is not JSON"})
        problem = validate_payload(payload, max_users=self.max_users)
        if problem is not None:
            status = 413 if problem.startswith("too many users") else 400
            self._report(payload if isinstance(payload, dict) else None, status, problem)
            return Reply(status, {"error": problem})
        users = payload["users"]
        poisoned = sorted({u["user_id"] for u in users} & self.poison_user_ids)
        if poisoned:
            self._report(payload, 400, f"refused user(s) {poisoned}")
            return Reply(400, {"error": f"user_id {poisoned[0]!r} is refused"})
        cohort = self.cohorts.setdefault(payload["cohort_id"], {})
        applied = []
        for user in users:
            if not self.keep_record():
                continue
            applied.append(user["user_id"])
            if payload["in_cohort"]:
                cohort[user["user_id"]] = dict(user["user_properties"])
            else:
                cohort.pop(user["user_id"], None)
        operation = "enter" if payload["in_cohort"] else "leave"
        self.record_delivery(request, operation, applied)
        self._report(payload, 200, "ok")
        return Reply(200, {"status": "ok", "received": len(users)})


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``<timestamp>.<body>``)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str, timestamp: str | None, header: str | None, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> str | None:
    """``None`` when the signature is valid and fresh, else what is wrong (never the secret)."""
    if not timestamp or not header:
        return "missing signature or timestamp header"
    try:
        sent_at = float(timestamp)
    except ValueError:
        return "timestamp header is not a number"
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        return f"timestamp is {current - sent_at:+.0f} s away from now (tolerance {tolerance:g} s)"
    if not hmac.compare_digest(signature(secret, timestamp, body), header.strip()):
        return "signature does not match the body"
    return None


def validate_payload(payload: Any, *, max_users: int) -> str | None:
    """What is wrong with a cohort-webhook payload, or ``None``."""
    if not isinstance(payload, dict):
        return "payload must be a JSON object"
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        return f"missing key(s) {missing}"
    if not isinstance(payload["in_cohort"], bool):
        return "in_cohort must be true or false"
    for key in ("cohort_name", "cohort_id", "message_id", "computed_time"):
        if not isinstance(payload[key], str) or not payload[key]:
            return f"{key} must be a non-empty string"
    users = payload["users"]
    if not isinstance(users, list):
        return "users must be a list"
    if len(users) > max_users:
        return f"too many users: {len(users)} > {max_users}"
    seen: set[str] = set()
    for index, user in enumerate(users):
        if not isinstance(user, dict) or not isinstance(user.get("user_id"), str) or not user["user_id"]:
            return f"users[{index}].user_id must be a non-empty string"
        if not isinstance(user.get("user_properties", {}), dict):
            return f"users[{index}].user_properties must be an object"
        if user["user_id"] in seen:
            return f"users[{index}].user_id {user['user_id']!r} repeats"
        seen.add(user["user_id"])
    return None


def _print_line(payload: dict[str, Any] | None, status: int, reason: str) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if payload is None:
        print(f"{now}  REFUSED {status}: {reason}", flush=True)
        return
    direction = "in " if payload.get("in_cohort") else "out"
    users = payload.get("users") if isinstance(payload.get("users"), list) else []
    sample = ", ".join(str(u.get("user_id")) for u in users[:3] if isinstance(u, dict))
    more = f" +{len(users) - 3}" if len(users) > 3 else ""
    verdict = ("ok" if reason == "ok" else reason) if status == 200 else f"REFUSED {status}: {reason}"
    print(
        f"{now}  cohort={payload.get('cohort_id')} {direction} users={len(users)} [{sample}{more}] "
        f"message_id={payload.get('message_id')} signature=ok {verdict}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the local webhook receiver until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m reverse_etl.emulators.webhook",
        description="Local cohort-webhook receiver: verifies signatures, de-duplicates on message_id, prints a line per batch.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--secret-env", metavar="VAR", help="environment variable holding the signing secret")
    parser.add_argument("--max-users", type=int, default=10_000)
    args = parser.parse_args(argv)
    secret = None
    if args.secret_env:
        secret = os.environ.get(args.secret_env)
        if not secret:
            parser.error(f"environment variable {args.secret_env} is not set or empty")
    receiver = WebhookEmulator(secret=secret, max_users=args.max_users, on_batch=_print_line, host=args.host, port=args.port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with receiver:
        checking = "verifying signatures" if secret else "NOT verifying signatures (no --secret-env)"
        print(f"webhook receiver listening on {receiver.url}/ ({checking})", flush=True)
        stop.wait()
    print("webhook receiver stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
