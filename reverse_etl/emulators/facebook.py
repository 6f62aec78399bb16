"""Facebook Custom Audiences emulator: ``POST`` / ``DELETE /{version}/{audience_id}/users``.

It checks the token (``Authorization: Bearer`` or ``access_token``; a bad one is a 400 with error
code 190, as the Graph API answers), that the audience exists (400, code 100 / subcode 33), the
payload (``schema`` of ``*_SHA256`` keys only, rows as long as the schema, at most 10,000 rows) and
the session (``session_id``, ``batch_seq``, ``last_batch_flag``, ``estimated_num_total``). Values must
be SHA-256 hex: anything else is an invalid entry (counted, sampled in ``invalid_entry_samples`` and
kept in :attr:`FacebookEmulator.raw_values` so a test can prove no raw PII arrived).

Repeats are recognised like Facebook does, by ``(audience, session_id, batch_seq)``. Throttling is a
400 with code 80003 and ``is_transient: true``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

from reverse_etl.emulators.base import Emulator, Faults, Reply, Request, bearer_token

_PATH = re.compile(r"^/(v\d+\.\d+)/(\d+)/users/?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
SCHEMA_KEYS = frozenset({"EMAIL_SHA256", "PHONE_SHA256", "MADID_SHA256", "EXTERN_ID"})
Member = frozenset[tuple[str, str]]


def graph_error(message: str, code: int, *, subcode: int | None = None, transient: bool = False, status: int = 400) -> Reply:
    """A Graph API error answer."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AemulatorTrace"}
    if subcode is not None:
        error["error_subcode"] = subcode
    if transient:
        error["is_transient"] = True
    return Reply(status, {"error": error})


class FacebookEmulator(Emulator):
    """Keeps each audience as a set of members (their non-empty schema key / hash pairs).

    Parameters
    ----------
    access_token
        The only accepted token.
    audience_ids
        Audiences that exist (others answer "does not exist").
    max_users
        Rows per request (Facebook: 10,000).
    faults, host, port
        See :class:`~reverse_etl.emulators.base.Emulator`.

    Attributes
    ----------
    audiences
        ``audience_id -> set of members``; a member is a frozenset of ``(schema key, hash)`` pairs.
    raw_values
        Every value received that was not a SHA-256 hex digest.
    sessions
        ``(audience_id, session_id) -> batch_seq`` values received, for session checks.
    """

    name: ClassVar[str] = "facebook"

    def __init__(
        self,
        *,
        access_token: str,
        audience_ids: Iterable[str] = ("23850000000000001",),
        max_users: int = 10_000,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(faults=faults, host=host, port=port)
        self.access_token = access_token
        self.max_users = max_users
        self.audiences: dict[str, set[Member]] = {a: set() for a in audience_ids}
        self.raw_values: list[str] = []
        self.sessions: dict[tuple[str, int], list[int]] = {}

    def members(self, audience_id: str) -> set[Member]:
        """A copy of one audience."""
        with self.lock:
            return set(self.audiences.get(audience_id, set()))

    def hashes(self, audience_id: str, schema_key: str) -> set[str]:
        """The hashes of one schema key (``EMAIL_SHA256``) held in an audience."""
        return {value for member in self.members(audience_id) for key, value in member if key == schema_key}

    def throttle_reply(self, wait: float | None, *, message: str = "rate limit exceeded") -> Reply:
        reply = graph_error("(#80003) There have been too many calls to this ad-account. Wait a bit and try again.", 80003, transient=True)
        reply.headers.update(self.wait_headers(wait))
        return reply

    def authenticate(self, request: Request) -> Reply | None:
        token = bearer_token(request) or request.param("access_token")
        if token != self.access_token:
            return graph_error("Invalid OAuth access token - Cannot parse access token", 190)
        return None

    def is_batch(self, request: Request) -> bool:
        return request.method in ("POST", "DELETE") and bool(_PATH.match(request.path))

    def dedupe_key(self, request: Request) -> str | None:
        match = _PATH.match(request.path)
        try:
            session = request.json().get("session")
            return f"{request.method} {match.group(2)} session {int(session['session_id'])} seq {int(session['batch_seq'])}" if match else None
        except (ValueError, AttributeError, KeyError, TypeError):
            return None

    def handle(self, request: Request) -> Reply:
        match = _PATH.match(request.path)
        if match is None:
            return graph_error(f"Unknown path components: {request.path}", 2500)
        if request.method not in ("POST", "DELETE"):
            return graph_error("Unsupported request method", 100)
        audience_id = match.group(2)
        if audience_id not in self.audiences:
            return graph_error(
                f"Unsupported post request. Object with ID '{audience_id}' does not exist, cannot be loaded due to "
                "missing permissions, or does not support this operation", 100, subcode=33,
            )
        try:
            body = request.json()
        except ValueError:
            return graph_error("Invalid JSON body", 100)
        problem = self._problem(body)
        if problem is not None:
            return graph_error(f"(#100) {problem}", 100)
        payload, session = body["payload"], body["session"]
        schema: list[str] = payload["schema"]
        invalid: dict[str, str] = {}
        members: list[Member] = []
        for row in payload["data"]:
            member: set[tuple[str, str]] = set()
            for key, value in zip(schema, row, strict=True):
                if value == "":
                    continue
                if not _SHA256.match(value):
                    self.raw_values.append(value)
                    invalid[value] = f"{key} is not a normalised SHA-256 hash"
                    continue
                member.add((key, value))
            if member:
                members.append(frozenset(member))
        audience = self.audiences[audience_id]
        committed = []
        for member in members:
            if not self.keep_record():
                continue
            committed.append(",".join(sorted(v for _, v in member)))
            if request.method == "POST":
                audience.add(member)
            else:
                # A removal names a person by any of their hashes.
                for held in [m for m in audience if m & member]:
                    audience.discard(held)
        self.sessions.setdefault((audience_id, int(session["session_id"])), []).append(int(session["batch_seq"]))
        self.record_delivery(request, "add" if request.method == "POST" else "remove", committed)
        return Reply(200, {
            "audience_id": audience_id,
            "session_id": str(session["session_id"]),
            "num_received": len(payload["data"]),
            "num_invalid_entries": len(invalid),
            "invalid_entry_samples": dict(list(invalid.items())[:10]),
        })

    def _problem(self, body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("payload"), dict):
            return "param payload must be an object with schema and data"
        payload = body["payload"]
        schema, data = payload.get("schema"), payload.get("data")
        if not isinstance(schema, list) or not schema or not all(isinstance(k, str) for k in schema):
            return "payload.schema must be a non-empty list of keys"
        unknown = [k for k in schema if k not in SCHEMA_KEYS]
        if unknown:
            return f"payload.schema has key(s) {unknown} that are not accepted (hashed keys only: {sorted(SCHEMA_KEYS)})"
        if len(set(schema)) != len(schema):
            return "payload.schema repeats a key"
        if not isinstance(data, list) or not data:
            return "payload.data must be a non-empty list of rows"
        if len(data) > self.max_users:
            return f"payload.data has {len(data)} rows, more than {self.max_users}"
        for index, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(schema) or not all(isinstance(v, str) for v in row):
                return f"payload.data[{index}] must be a list of {len(schema)} strings"
        session = body.get("session")
        if not isinstance(session, dict):
            return "param session must be an object"
        for key, kind in (("session_id", int), ("batch_seq", int), ("last_batch_flag", bool), ("estimated_num_total", int)):
            value = session.get(key)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                return f"session.{key} must be {'a boolean' if kind is bool else 'an integer'}"
        if session["batch_seq"] < 1 or session["session_id"] < 1:
            return "session.session_id and session.batch_seq must be positive"
        return None
