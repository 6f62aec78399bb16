"""Braze ``/users/track`` emulator: Bearer auth, 75 objects per request, ``errors[]`` for partial success.

What it checks, like Braze: the API key; a JSON body with an ``attributes`` list of at most 75 objects
(more, or a body that is not an object, is a 400 for the whole request); per object, an
``external_id`` and a plausible ``email`` when one is given — an object failing these is reported in
``errors: [{"type", "input_array": "attributes", "index"}]`` of a ``201`` while the others are applied.
``_update_existing_only: true`` never creates a user. A ``null`` value removes the attribute.

Rate limit: Braze allows 3,000 requests / 3 s; set ``Faults(rate_limit=30, rate_window=0.03)`` to
get the same shape scaled down. A 429 carries ``X-RateLimit-Reset`` (a Unix time, as Braze) beside
the configured ``Retry-After`` style.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from reverse_etl.emulators.base import Emulator, Faults, Reply, Request, bearer_token

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class BrazeEmulator(Emulator):
    """Applies ``/users/track`` attribute objects to :attr:`users`.

    Parameters
    ----------
    api_key
        The only accepted key (``Authorization: Bearer <key>``).
    max_objects
        Attribute objects per request (Braze: 75).
    membership_attribute
        When set, deliveries are labelled ``in`` / ``out`` by this boolean attribute (else ``track``).
    record_errors
        ``external_id -> error type`` to report for that user instead of applying it (e.g.
        ``"Internal error, try again"`` for a transient one).
    faults, host, port
        See :class:`~reverse_etl.emulators.base.Emulator`.

    Attributes
    ----------
    users
        ``external_id -> attributes`` as applied.
    """

    name: ClassVar[str] = "braze"

    def __init__(
        self,
        *,
        api_key: str,
        max_objects: int = 75,
        membership_attribute: str | None = None,
        record_errors: Mapping[str, str] | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(faults=faults, host=host, port=port)
        self.api_key = api_key
        self.max_objects = max_objects
        self.membership_attribute = membership_attribute
        self.record_errors: dict[str, str] = dict(record_errors or {})
        self.users: dict[str, dict[str, Any]] = {}

    def user(self, external_id: str) -> dict[str, Any] | None:
        """A copy of one user's attributes."""
        with self.lock:
            found = self.users.get(external_id)
            return dict(found) if found is not None else None

    def wait_headers(self, wait: float | None) -> dict[str, str]:
        headers = super().wait_headers(wait)
        if wait is not None:
            headers["X-RateLimit-Reset"] = str(math.ceil(time.time() + wait))
        return headers

    def authenticate(self, request: Request) -> Reply | None:
        if bearer_token(request) != self.api_key:
            return Reply(401, {"message": "Invalid API key"})
        return None

    def is_batch(self, request: Request) -> bool:
        return request.method == "POST" and request.path == "/users/track"

    def handle(self, request: Request) -> Reply:
        if request.path != "/users/track":
            return Reply(404, {"message": f"no endpoint {request.path}"})
        if request.method != "POST":
            return Reply(405, {"message": "use POST"})
        try:
            payload = request.json()
        except ValueError:
            return Reply(400, {"message": "Received unparseable request body"})
        if not isinstance(payload, dict) or not isinstance(payload.get("attributes", []), list):
            return Reply(400, {"message": "attributes must be an array of objects"})
        objects = payload.get("attributes", [])
        if len(objects) > self.max_objects:
            return Reply(400, {"message": f"Too many attributes objects: {len(objects)}, max {self.max_objects} per request"})
        errors: list[dict[str, Any]] = []
        applied: dict[str, list[str]] = {}
        for index, obj in enumerate(objects):
            problem = self._problem(obj)
            if problem is not None:
                errors.append({"type": problem, "input_array": "attributes", "index": index})
                continue
            external_id = obj["external_id"]
            injected = self.record_errors.get(external_id)
            if injected is not None:
                errors.append({"type": injected, "input_array": "attributes", "index": index})
                continue
            operation = "track"
            if self.membership_attribute is not None:
                operation = "out" if obj.get(self.membership_attribute) is False else "in"
            applied.setdefault(operation, []).append(external_id)
            if not self.keep_record():
                continue
            existing = self.users.get(external_id)
            if existing is None:
                if obj.get("_update_existing_only") is True:
                    continue
                existing = self.users.setdefault(external_id, {})
            for name, value in obj.items():
                if name in ("external_id", "_update_existing_only"):
                    continue
                if value is None:
                    existing.pop(name, None)
                else:
                    existing[name] = value
        for operation, ids in applied.items():
            self.record_delivery(request, operation, ids)
        body: dict[str, Any] = {"message": "success", "attributes_processed": len(objects) - len(errors)}
        if errors:
            body["errors"] = errors
        return Reply(201, body)

    @staticmethod
    def _problem(obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return "attributes object must be a JSON object"
        external_id = obj.get("external_id")
        if not isinstance(external_id, str) or not external_id:
            return "Missing 'external_id', 'braze_id', 'user_alias', 'email' or 'phone'"
        email = obj.get("email")
        if email is not None and (not isinstance(email, str) or not _EMAIL.match(email.strip())):
            return "Invalid 'email' attribute"
        for name in obj:
            if not isinstance(name, str) or not name or name.startswith("$"):
                return f"Invalid attribute name {name!r}"
        return None
