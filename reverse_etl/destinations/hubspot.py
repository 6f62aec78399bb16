"""HubSpot contacts: ``POST /crm/v3/objects/contacts/batch/upsert`` keyed by e-mail, 100 per request.

Each record becomes one input ``{"idProperty": "email", "id": "<email>", "objectWriteTraceId":
"<record key>", "properties": {...}}``: the e-mail (trimmed, lower-cased) addresses the contact, the
other fields are set as properties (under the same names: map them to HubSpot's internal property
names in the sync's ``fields``), plus a **membership property** (``in_<sync name>`` by default):

* add / change: the fields and ``in_<sync>: "true"``;
* remove: only ``in_<sync>: "false"`` — HubSpot contacts are shared with sales and support, so a sync
  never deletes one; a list or workflow filtered on the property follows the cohort. Create the
  property in HubSpot first (type single checkbox / boolean): an unknown property is refused for the
  whole request and fails the run as a configuration error, without blaming the records.

The record's ``user_id`` is not sent unless ``user_id_property`` names the HubSpot property for it.
Values are sent as HubSpot expects text: ``true``/``false``, ISO 8601 dates and times (UTC), numbers
as written, lists and objects as JSON, ``NULL`` as ``""`` (clears the property).

HubSpot answers ``207`` with ``errors[]`` for inputs it refused while writing the others; each error is
tied back to its record by ``objectWriteTraceId`` (or the e-mail in ``context.ids``). Categories that
mean "later" (rate limits, timeouts, locks, internal errors) are transient rejections; validation
errors are permanent until the record changes. A record without a usable e-mail is skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import httpx

from reverse_etl.destinations.base import ALL_OPERATIONS, BatchResult, ChangeBatch, RunInfo, Secret
from reverse_etl.http import (
    HTTP_SETTINGS,
    HttpConfig,
    HttpRecordDestination,
    SenderOptions,
    Settings,
    Verdict,
    batch_idempotency_key,
    chunk_key,
    dumps_json,
    encode_json,
    url_without_credentials,
)
from reverse_etl.pii import normalise_email
from reverse_etl.spec import Operation

logger = logging.getLogger("reverse_etl.destinations.hubspot")

MAX_INPUTS = 100
DEFAULT_BASE_URL = "https://api.hubapi.com"
UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
# Private apps: 100 (Starter) to 190 (Pro / Enterprise) requests per 10 s.
REQUESTS_PER_SECOND = 10.0
SKIP_REASON = "no usable email after normalising"
TRANSIENT_CATEGORIES = frozenset({"RATE_LIMITS", "TIMEOUT", "INTERNAL_ERROR", "LOCKED", "CONFLICT", "SERVICE_UNAVAILABLE"})
PERMANENT_CATEGORIES = frozenset({"VALIDATION_ERROR", "INVALID_EMAIL", "OBJECT_NOT_FOUND", "BAD_REQUEST", "INVALID_PARAMS"})
_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")


def property_value(value: Any) -> str:
    """A record value as the text HubSpot stores."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        moment = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        return moment.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (int, float, str)):
        return str(value)
    # A Decimal (money) and nested values as JSON text, decimals digit for digit.
    return dumps_json(value, ensure_ascii=True)


def classify_hubspot(response: httpx.Response) -> Verdict | None:
    """A missing property is the portal's configuration, not the batch's fault."""
    if response.status_code == 400 and b"PROPERTY_DOESNT_EXIST" in response.content:
        return Verdict.CONFIG
    return None


class HubSpotContactsDestination(HttpRecordDestination):
    """Upserts contacts in HubSpot by e-mail (batch upsert, 100 per request).

    Parameters
    ----------
    access_token
        A private app token with ``crm.objects.contacts.write`` (:class:`Secret` or text).
    membership_property
        Property set ``"true"`` on add / change and ``"false"`` on remove; default ``in_<sync name>``.
    user_id_property
        HubSpot property to send the record's ``user_id`` in; default: not sent.
    base_url
        API root (an emulator's URL in tests).
    http
        Timeouts, retries and pace (:class:`~reverse_etl.http.HttpConfig`).
    sender_options
        Test hooks (``sleep``, ``random``, ``transport``).
    """

    kind: ClassVar[str] = "hubspot"
    max_batch_size: ClassVar[int | None] = MAX_INPUTS
    max_requests_per_second: ClassVar[float | None] = REQUESTS_PER_SECOND
    supported_operations = ALL_OPERATIONS
    required_identifiers: ClassVar[frozenset[str]] = frozenset({"email"})
    requires_consent: ClassVar[bool] = True

    def __init__(
        self,
        *,
        access_token: Secret | str,
        membership_property: str | None = None,
        user_id_property: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        http: HttpConfig | None = None,
        sender_options: SenderOptions | None = None,
    ) -> None:
        read = Settings(
            {"access_token": access_token, "membership_property": membership_property,
             "user_id_property": user_id_property, "base_url": base_url},
            destination_type=self.kind, sync_name=None,
            allowed=("access_token", "membership_property", "user_id_property", "base_url"),
        )
        self.access_token = read.secret("access_token")
        self.base_url = read.url("base_url")
        for name in ("membership_property", "user_id_property"):
            value = read.string(name)
            if value is not None and not _PROPERTY_NAME.match(value):
                raise read.error(name, f"must be a HubSpot internal property name (lower case, digits, _), got {value!r}")
        self.membership_property = read.string("membership_property")
        self.user_id_property = read.string("user_id_property")
        self.sender = self._make_sender(
            "hubspot",
            http,
            headers={"Content-Type": "application/json"},
            secret_headers={"Authorization": Secret(f"Bearer {self.access_token.reveal()}")},
            secrets=[self.access_token],
            options=sender_options,
        )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, sync_name: str, base_dir: Any = None) -> HubSpotContactsDestination:
        """Build from ``destinations.yml``: ``access_token`` (env), ``membership_property``,
        ``user_id_property``, ``base_url`` and the common HTTP settings.

        Raises
        ------
        ValueError
            Naming the setting that is missing or invalid.
        """
        read = Settings(
            settings, destination_type=cls.kind, sync_name=sync_name,
            allowed=("access_token", "membership_property", "user_id_property", "base_url", *HTTP_SETTINGS),
        )
        return cls(
            access_token=read.secret("access_token"),
            membership_property=read.string("membership_property"),
            user_id_property=read.string("user_id_property"),
            base_url=read.url("base_url", default=DEFAULT_BASE_URL),
            http=read.http_config(),
        )

    @property
    def location(self) -> str:
        """The batch upsert endpoint (no credentials)."""
        return url_without_credentials(self.base_url) + UPSERT_PATH

    def settings(self) -> dict[str, Any]:
        """Public settings; the token shows as ``***``."""
        return {
            "location": self.location, "access_token": self.access_token,
            "membership_property": self.membership_property, "user_id_property": self.user_id_property,
        }

    def properties(self, record: Mapping[str, Any], operation: Operation, membership: str) -> dict[str, str]:
        """The ``properties`` of one record's input."""
        if operation is Operation.REMOVE:
            return {membership: "false"}
        props: dict[str, str] = {}
        for name, value in record.items():
            if name == "email":
                continue
            if name == "user_id":
                if self.user_id_property:
                    props[self.user_id_property] = property_value(value)
                continue
            props[name] = property_value(value)
        props[membership] = "true"
        return props

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        """Upsert the batch's contacts; map a 207's ``errors[]`` back to record keys."""
        membership = self.membership_property or f"in_{run.sync_name}"
        skipped: dict[str, str] = {}
        rejected: dict[str, str] = {}
        permanent: dict[str, str] = {}
        inputs: list[tuple[str, dict[str, Any]]] = []
        first_key_of: dict[str, str] = {}
        for key, record in zip(batch.keys, batch.to_pylist(), strict=True):
            email = normalise_email(record.get("email"))
            if email is None:
                skipped[key] = SKIP_REASON
                continue
            if email in first_key_of:
                # HubSpot refuses a whole request with a repeated id; the second goes next run.
                rejected[key] = f"email also used by record {first_key_of[email]!r} of this batch; sent again next run"
                continue
            first_key_of[email] = key
            inputs.append((key, {
                "idProperty": "email", "id": email, "objectWriteTraceId": key,
                "properties": self.properties(record, batch.operation, membership),
            }))
        batch_key = batch_idempotency_key(run, batch)
        count = (len(inputs) + MAX_INPUTS - 1) // MAX_INPUTS
        for index in range(count):
            part = inputs[index * MAX_INPUTS:(index + 1) * MAX_INPUTS]
            response = self.sender.request(
                "POST", self.base_url + UPSERT_PATH, content=encode_json({"inputs": [i for _, i in part]}),
                idempotency_key=chunk_key(batch_key, index, count),
                what=f"batch {batch.sequence} ({batch.operation.value}, {len(part)} contacts)",
                classify=classify_hubspot,
            )
            self._map_errors(response, part, rejected, permanent)
        return BatchResult(rejected=rejected, permanent=permanent, skipped=skipped)

    def _map_errors(
        self, response: httpx.Response, part: list[tuple[str, dict[str, Any]]], rejected: dict[str, str], permanent: dict[str, str]
    ) -> None:
        if response.status_code != 207:
            return
        try:
            answer = response.json()
        except ValueError:
            answer = None
        errors = answer.get("errors") if isinstance(answer, dict) else None
        sent_keys = {key for key, _ in part}
        key_of_email = {item["id"]: key for key, item in part}
        if not isinstance(errors, list):
            # A multi-status without a readable list: nothing can be counted as written.
            for key in sent_keys:
                rejected[key] = "hubspot: 207 without a readable errors list; sent again next run"
            return
        unmatched = 0
        for error in errors:
            if not isinstance(error, dict):
                continue
            keys = self._error_keys(error, sent_keys, key_of_email)
            if not keys:
                unmatched += 1
                continue
            category = str(error.get("category") or "")
            message = self.sender.redact(str(error.get("message") or category or "refused"))[:200]
            reason = f"hubspot {category}: {message}" if category else f"hubspot: {message}"
            target = permanent if category in PERMANENT_CATEGORIES else rejected
            for key in keys:
                target[key] = reason
        if unmatched:
            logger.warning("hubspot: %d error(s) in a 207 could not be tied to a record", unmatched)

    @staticmethod
    def _error_keys(error: Mapping[str, Any], sent_keys: set[str], key_of_email: Mapping[str, str]) -> list[str]:
        context = error.get("context") if isinstance(error.get("context"), dict) else {}
        traces = error.get("objectWriteTraceId", context.get("objectWriteTraceId"))
        if isinstance(traces, str):
            traces = [traces]
        keys = [t for t in traces or [] if t in sent_keys]
        if keys:
            return keys
        ids = context.get("ids") or []
        return [key_of_email[i.strip().lower()] for i in ids if isinstance(i, str) and i.strip().lower() in key_of_email]
