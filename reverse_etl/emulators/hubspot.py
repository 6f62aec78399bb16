"""HubSpot contacts batch-upsert emulator: Bearer auth, 100 inputs, ``207`` multi-status for partial success.

Whole-request refusals, as HubSpot: more than 100 inputs, an ``idProperty`` other than ``email``, a
repeated id, a property value that is not a scalar (400 ``VALIDATION_ERROR``), and — when
``known_properties`` is given — a property the portal does not have (400 ``PROPERTY_DOESNT_EXIST``).
Per input: an invalid e-mail, or an error injected through ``record_errors``, is reported in
``errors[]`` of a ``207`` (``context.ids`` and ``objectWriteTraceId`` name it) while the other inputs
are written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from reverse_etl.emulators.base import Emulator, Faults, Reply, Request, bearer_token

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def hubspot_error(message: str, category: str = "VALIDATION_ERROR", status: int = 400, **extra: Any) -> Reply:
    """A HubSpot error answer."""
    return Reply(status, {"status": "error", "message": message, "correlationId": "emulator", "category": category, **extra})


class HubSpotEmulator(Emulator):
    """Keeps contacts by e-mail.

    Parameters
    ----------
    access_token
        The only accepted token.
    max_inputs
        Inputs per request (HubSpot: 100).
    known_properties
        When given, the portal's properties (``email`` is always known); others are refused.
    membership_property
        When set, deliveries are labelled ``in`` / ``out`` by this property (else ``upsert``).
    record_errors
        ``email -> category`` to report for that contact instead of writing it.
    faults, host, port
        See :class:`~reverse_etl.emulators.base.Emulator`.

    Attributes
    ----------
    contacts
        ``email -> properties`` as written.
    """

    name: ClassVar[str] = "hubspot"

    def __init__(
        self,
        *,
        access_token: str,
        max_inputs: int = 100,
        known_properties: Iterable[str] | None = None,
        membership_property: str | None = None,
        record_errors: Mapping[str, str] | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(faults=faults, host=host, port=port)
        self.access_token = access_token
        self.max_inputs = max_inputs
        self.known_properties = set(known_properties) | {"email"} if known_properties is not None else None
        self.membership_property = membership_property
        self.record_errors: dict[str, str] = dict(record_errors or {})
        self.contacts: dict[str, dict[str, str]] = {}
        self._ids: dict[str, str] = {}

    def contact(self, email: str) -> dict[str, str] | None:
        """A copy of one contact's properties."""
        with self.lock:
            found = self.contacts.get(email)
            return dict(found) if found is not None else None

    def throttle_reply(self, wait: float | None, *, message: str = "rate limit exceeded") -> Reply:
        reply = hubspot_error("You have reached your ten_secondly_rolling limit.", "RATE_LIMITS", 429,
                              errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING")
        reply.headers.update(self.wait_headers(wait))
        return reply

    def authenticate(self, request: Request) -> Reply | None:
        if bearer_token(request) != self.access_token:
            return hubspot_error("Authentication credentials not found.", "INVALID_AUTHENTICATION", 401)
        return None

    def is_batch(self, request: Request) -> bool:
        return request.method == "POST" and request.path == UPSERT_PATH

    def handle(self, request: Request) -> Reply:
        if request.path != UPSERT_PATH or request.method != "POST":
            return hubspot_error(f"no route {request.method} {request.path}", "OBJECT_NOT_FOUND", 404)
        try:
            body = request.json()
        except ValueError:
            return hubspot_error("Invalid input JSON on line 1")
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return hubspot_error("inputs must be a non-empty list")
        if len(inputs) > self.max_inputs:
            return hubspot_error(f"Batch input limit of {self.max_inputs} exceeded: {len(inputs)}")
        ids: list[str] = []
        for index, item in enumerate(inputs):
            if not isinstance(item, dict) or item.get("idProperty") != "email" or not isinstance(item.get("id"), str):
                return hubspot_error(f"inputs[{index}] needs idProperty 'email' and a string id")
            props = item.get("properties", {})
            if not isinstance(props, dict) or not all(
                isinstance(v, (str, int, float, bool)) or v is None for v in props.values()
            ):
                return hubspot_error(f"inputs[{index}].properties must map names to scalar values")
            if self.known_properties is not None:
                unknown = sorted(set(props) - self.known_properties)
                if unknown:
                    return hubspot_error(
                        f"Property values were not valid: Property \"{unknown[0]}\" does not exist",
                        errors=[{"error": "PROPERTY_DOESNT_EXIST", "name": n} for n in unknown],
                    )
            ids.append(item["id"].strip().lower())
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            return hubspot_error(f"Duplicate IDs found in batch input: {repeated}")

        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        written: dict[str, list[str]] = {}
        for item, email in zip(inputs, ids, strict=True):
            trace = item.get("objectWriteTraceId")
            context: dict[str, list[str]] = {"ids": [item["id"]]}
            if isinstance(trace, str):
                context["objectWriteTraceId"] = [trace]
            category = self.record_errors.get(email)
            if category is None and not _EMAIL.match(email):
                category = "VALIDATION_ERROR"
            if category is not None:
                message = f"Email address {item['id']} is invalid" if category == "VALIDATION_ERROR" else f"{category} for this contact"
                errors.append({"status": "error", "category": category, "message": message, "context": context})
                continue
            props = {k: "" if v is None else str(v) for k, v in item.get("properties", {}).items()}
            operation = "upsert"
            if self.membership_property is not None:
                operation = "out" if props.get(self.membership_property) == "false" else "in"
            written.setdefault(operation, []).append(email)
            new = email not in self.contacts
            if self.keep_record():
                contact = self.contacts.setdefault(email, {"email": email})
                contact.update(props)
                self._ids.setdefault(email, str(1000 + len(self._ids)))
            results.append({"id": self._ids.get(email, "0"), "properties": props, "new": new, "objectWriteTraceId": trace})
        for operation, emails in written.items():
            self.record_delivery(request, operation, emails)
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            answer.update(numErrors=len(errors), errors=errors)
            return Reply(207, answer)
        return Reply(200, answer)
