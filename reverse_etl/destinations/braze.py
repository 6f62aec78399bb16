"""Braze: user attributes through ``POST /users/track``, 75 attribute objects per request.

Every record becomes one attributes object addressed by ``external_id`` (the record's ``user_id``):
its other fields are set as attributes (``email`` and ``phone`` are Braze's standard attributes, the
rest custom attributes), plus a boolean **membership attribute**, ``in_<sync name>`` by default:

* add / change: ``{"external_id": "u1", "email": "...", "ltv": 120.5, "in_vip_buyers": true}``;
* remove: ``{"external_id": "u1", "in_vip_buyers": false, "_update_existing_only": true}`` — Braze has
  no "leave a segment" call; a segment filtered on ``in_vip_buyers is true`` follows the cohort, the
  user profile and its history stay, and a remove never creates a profile.

Braze answers ``201`` (or ``200``) with ``errors: [{"type", "input_array": "attributes", "index"}]``
for objects it refused while accepting the others: each error maps back to its record by index. An
error whose type reads as temporary (rate, timeout, internal...) is a transient rejection (retried
next run); any other (a missing id, an invalid e-mail) is permanent until the record changes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from reverse_etl.destinations.base import ALL_OPERATIONS, BatchResult, ChangeBatch, RunInfo, Secret
from reverse_etl.http import (
    HTTP_SETTINGS,
    HttpConfig,
    HttpRecordDestination,
    SenderOptions,
    Settings,
    batch_idempotency_key,
    chunk_key,
    encode_json,
    url_without_credentials,
)
from reverse_etl.spec import Operation

logger = logging.getLogger("reverse_etl.destinations.braze")

MAX_OBJECTS = 75
# 3,000 requests per 3 seconds per workspace on /users/track.
REQUESTS_PER_SECOND = 1_000.0
_TRANSIENT_ERROR = re.compile(r"rate|limit|timeout|timed out|temporar|unavailable|try again|internal|busy", re.IGNORECASE)
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def membership_attribute_for(sync_name: str) -> str:
    """The default membership attribute of a sync: ``in_<sync name>``."""
    return f"in_{sync_name}"


def text_id(value: object) -> str | None:
    """An identifier as text, ``None`` when missing or blank."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class BrazeDestination(HttpRecordDestination):
    """Sets user attributes in Braze (``/users/track``), keyed by ``external_id`` = ``user_id``.

    Parameters
    ----------
    rest_endpoint
        The workspace's REST endpoint, e.g. ``https://rest.iad-01.braze.com``.
    api_key
        REST API key with ``users.track`` permission (:class:`Secret` or plain text, wrapped).
    membership_attribute
        Boolean attribute set true on add / change and false on remove; default ``in_<sync name>``.
    http
        Timeouts, retries and pace (:class:`~reverse_etl.http.HttpConfig`).
    sender_options
        Test hooks (``sleep``, ``random``, ``transport``).
    """

    kind: ClassVar[str] = "braze"
    max_batch_size: ClassVar[int | None] = MAX_OBJECTS
    max_requests_per_second: ClassVar[float | None] = REQUESTS_PER_SECOND
    supported_operations = ALL_OPERATIONS
    required_identifiers: ClassVar[frozenset[str]] = frozenset({"user_id"})
    requires_consent: ClassVar[bool] = True

    def __init__(
        self,
        rest_endpoint: str,
        *,
        api_key: Secret | str,
        membership_attribute: str | None = None,
        http: HttpConfig | None = None,
        sender_options: SenderOptions | None = None,
    ) -> None:
        read = Settings(
            {"rest_endpoint": rest_endpoint, "api_key": api_key, "membership_attribute": membership_attribute},
            destination_type="braze", sync_name=None, allowed=("rest_endpoint", "api_key", "membership_attribute"),
        )
        self.rest_endpoint = read.url("rest_endpoint")
        self.api_key = read.secret("api_key")
        attribute = read.string("membership_attribute")
        if attribute is not None and not _ATTRIBUTE_NAME.match(attribute):
            raise read.error("membership_attribute", f"must be a plain attribute name (letters, digits, _), got {attribute!r}")
        self.membership_attribute = attribute
        self.sender = self._make_sender(
            "braze",
            http,
            headers={"Content-Type": "application/json"},
            secret_headers={"Authorization": Secret(f"Bearer {self.api_key.reveal()}")},
            secrets=[self.api_key],
            options=sender_options,
        )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, sync_name: str, base_dir: Any = None) -> BrazeDestination:
        """Build from ``destinations.yml``: ``rest_endpoint``, ``api_key`` (env), ``membership_attribute``
        and the common HTTP settings.

        Raises
        ------
        ValueError
            Naming the setting that is missing or invalid.
        """
        read = Settings(
            settings, destination_type="braze", sync_name=sync_name,
            allowed=("rest_endpoint", "api_key", "membership_attribute", *HTTP_SETTINGS),
        )
        return cls(
            read.url("rest_endpoint"),
            api_key=read.secret("api_key"),
            membership_attribute=read.string("membership_attribute"),
            http=read.http_config(),
        )

    @property
    def location(self) -> str:
        """``<rest_endpoint>/users/track`` (no credentials)."""
        return url_without_credentials(self.rest_endpoint) + "/users/track"

    def settings(self) -> dict[str, Any]:
        """Public settings; the API key shows as ``***``."""
        return {"location": self.location, "api_key": self.api_key, "membership_attribute": self.membership_attribute}

    def attributes_object(self, record: Mapping[str, Any], operation: Operation, attribute: str) -> dict[str, Any]:
        """The ``/users/track`` attributes object of one record (its ``user_id`` must be usable)."""
        external_id = text_id(record.get("user_id"))
        if operation is Operation.REMOVE:
            return {"external_id": external_id, attribute: False, "_update_existing_only": True}
        obj: dict[str, Any] = {"external_id": external_id}
        for name, value in record.items():
            if name != "user_id":
                obj[name] = value
        obj[attribute] = True
        return obj

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        """Send the batch as ``/users/track`` requests of at most 75 objects; map ``errors[]`` back to keys."""
        attribute = self.membership_attribute or membership_attribute_for(run.sync_name)
        skipped: dict[str, str] = {}
        rejected: dict[str, str] = {}
        permanent: dict[str, str] = {}
        objects: list[tuple[str, dict[str, Any]]] = []
        first_key_of: dict[str, str] = {}
        for key, record in zip(batch.keys, batch.to_pylist(), strict=True):
            external_id = text_id(record.get("user_id"))
            if external_id is None:
                skipped[key] = "no user_id for external_id (unresolved mapping)"
                continue
            if external_id in first_key_of:
                rejected[key] = f"external_id {external_id!r} is also record {first_key_of[external_id]!r} of this batch; sent again next run"
                continue
            first_key_of[external_id] = key
            objects.append((key, self.attributes_object(record, batch.operation, attribute)))

        key = batch_idempotency_key(run, batch)
        count = (len(objects) + MAX_OBJECTS - 1) // MAX_OBJECTS
        for index in range(count):
            part = objects[index * MAX_OBJECTS:(index + 1) * MAX_OBJECTS]
            body = encode_json({"attributes": [obj for _, obj in part]})
            response = self.sender.request(
                "POST", f"{self.rest_endpoint}/users/track", content=body, idempotency_key=chunk_key(key, index, count),
                what=f"batch {batch.sequence} ({batch.operation.value}, {len(part)} users)",
            )
            self._map_errors(response, [k for k, _ in part], rejected, permanent)
        return BatchResult(rejected=rejected, permanent=permanent, skipped=skipped)

    def _map_errors(self, response: Any, keys: list[str], rejected: dict[str, str], permanent: dict[str, str]) -> None:
        try:
            answer = response.json()
        except ValueError:
            return  # a 2xx without JSON: nothing refused
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if not isinstance(errors, list):
            return
        for error in errors:
            if not isinstance(error, dict):
                continue
            index = error.get("index")
            if error.get("input_array", "attributes") != "attributes" or not isinstance(index, int) or not 0 <= index < len(keys):
                logger.warning("braze: an error not tied to a sent attributes object: %s", self.sender.redact(str(error))[:300])
                continue
            reason = f"braze: {self.sender.redact(str(error.get('type') or 'refused'))[:200]}"
            target = rejected if _TRANSIENT_ERROR.search(reason) else permanent
            target[keys[index]] = reason
