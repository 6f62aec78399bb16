"""Facebook Custom Audiences: hashed e-mails and phones added to / removed from an audience.

``POST /{api_version}/{audience_id}/users`` adds, ``DELETE`` of the same path removes, both with::

    {"payload": {"schema": ["EMAIL_SHA256", "PHONE_SHA256"], "data": [["<sha256>", "<sha256>"], ...]},
     "session": {"session_id": 8471..., "batch_seq": 1, "last_batch_flag": true, "estimated_num_total": 2}}

* **Hashed PII only**: e-mails are trimmed and lower-cased, phones reduced to digits with the country
  code (``default_country_code`` for numbers written nationally), then SHA-256 hex
  (:mod:`reverse_etl.pii`); a value already hashed passes through. Raw values never leave the process.
* A record with neither a usable e-mail nor a usable phone after normalising is **skipped** with the
  reason ``no usable email or phone after normalising`` — never a reason to fail the batch.
* ``schema`` lists the identifiers the batch has (an ``email`` and / or ``phone`` field); a missing
  value in a row is ``""``.
* The session id is derived from the batch's idempotency key, so a batch re-sent after a timeout or
  a crash is the same session and batch sequence — Facebook's own de-duplication — and the key is
  also sent as ``Idempotency-Key``.
* A **change** is sent as an add of the record's current identifiers (an audience holds identities,
  not records); identifiers a record no longer has stay until it is removed.

Facebook answers throttling and token problems with a 400 and an error code; they are classed by
code: 190 / 102 / 10 / 200-299 (token, permission) and 100 with subcode 33 (no such audience) fail
the run as configuration errors; 1, 2, 4, 17, 32, 613, 80003 and ``is_transient`` are retried.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from reverse_etl.destinations.base import ALL_OPERATIONS, BatchResult, ChangeBatch, RunInfo, Secret
from reverse_etl.errors import DestinationError
from reverse_etl.http import (
    HTTP_SETTINGS,
    HttpConfig,
    HttpRecordDestination,
    SenderOptions,
    Settings,
    Verdict,
    batch_idempotency_key,
    chunk_key,
    encode_json,
    url_without_credentials,
)
from reverse_etl.pii import hash_email, hash_phone, validate_country_code
from reverse_etl.spec import Operation

logger = logging.getLogger("reverse_etl.destinations.facebook")

MAX_USERS = 10_000
DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
REQUESTS_PER_SECOND = 5.0
SKIP_REASON = "no usable email or phone after normalising"
# Graph API error codes (https://developers.facebook.com/docs/graph-api/guides/error-handling).
CONFIG_CODES = frozenset({10, 102, 190, *range(200, 300)})
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 341, 613, 80003})


def classify_graph_error(response: httpx.Response) -> Verdict | None:
    """The class of a Graph API error answer by its code (``None``: the status decides)."""
    if response.status_code < 400:
        return None
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    code, subcode = error.get("code"), error.get("error_subcode")
    if error.get("is_transient") is True or code in TRANSIENT_CODES:
        return Verdict.RETRY
    if code in CONFIG_CODES or (code == 100 and subcode == 33):
        return Verdict.CONFIG
    return None


def session_id_for(key: str) -> int:
    """A positive 63-bit session id derived from an idempotency key (stable across retries)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") & (2**63 - 1) or 1


class FacebookCustomAudienceDestination(HttpRecordDestination):
    """Adds and removes hashed e-mails / phones in a Facebook Custom Audience.

    Parameters
    ----------
    audience_id
        The custom audience's id.
    access_token
        A token with ``ads_management`` on the audience's ad account (:class:`Secret` or text).
    default_country_code
        Country calling code for phone numbers without one (``"81"`` for Japan); default none.
    base_url, api_version
        Graph API root and version (an emulator's URL in tests).
    http
        Timeouts, retries and pace (:class:`~reverse_etl.http.HttpConfig`).
    sender_options
        Test hooks (``sleep``, ``random``, ``transport``).
    """

    kind: ClassVar[str] = "facebook_custom_audience"
    max_batch_size: ClassVar[int | None] = MAX_USERS
    max_requests_per_second: ClassVar[float | None] = REQUESTS_PER_SECOND
    supported_operations = ALL_OPERATIONS
    any_identifier_of: ClassVar[frozenset[str]] = frozenset({"email", "phone"})
    requires_consent: ClassVar[bool] = True

    def __init__(
        self,
        audience_id: str,
        *,
        access_token: Secret | str,
        default_country_code: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str = DEFAULT_API_VERSION,
        http: HttpConfig | None = None,
        sender_options: SenderOptions | None = None,
    ) -> None:
        read = Settings(
            {"audience_id": audience_id, "access_token": access_token, "base_url": base_url, "api_version": api_version},
            destination_type=self.kind, sync_name=None, allowed=("audience_id", "access_token", "base_url", "api_version"),
        )
        audience = read.string("audience_id", required=True)
        assert audience is not None
        if not audience.isdigit():
            raise read.error("audience_id", f"must be the audience's numeric id, got {audience!r}")
        self.audience_id = audience
        self.access_token = read.secret("access_token")
        self.base_url = read.url("base_url")
        version = read.string("api_version", required=True)
        assert version is not None
        if not (version.startswith("v") and version[1:].replace(".", "").isdigit()):
            raise read.error("api_version", f"must look like 'v21.0', got {version!r}")
        self.api_version = version
        self.default_country_code: str | None = None
        if default_country_code is not None:
            try:
                self.default_country_code = validate_country_code(default_country_code)
            except ValueError as exc:
                raise ValueError(f"{self.kind} destination: {exc}") from None
        self.sender = self._make_sender(
            "facebook_custom_audience",
            http,
            headers={"Content-Type": "application/json"},
            secret_headers={"Authorization": Secret(f"Bearer {self.access_token.reveal()}")},
            secrets=[self.access_token],
            options=sender_options,
        )

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], *, sync_name: str, base_dir: Any = None
    ) -> FacebookCustomAudienceDestination:
        """Build from ``destinations.yml``: ``audience_id``, ``access_token`` (env),
        ``default_country_code``, ``base_url``, ``api_version`` and the common HTTP settings.

        Raises
        ------
        ValueError
            Naming the setting that is missing or invalid.
        """
        read = Settings(
            settings, destination_type=cls.kind, sync_name=sync_name,
            allowed=("audience_id", "access_token", "default_country_code", "base_url", "api_version", *HTTP_SETTINGS),
        )
        return cls(
            read.string("audience_id", required=True) or "",
            access_token=read.secret("access_token"),
            default_country_code=read.string("default_country_code"),
            base_url=read.url("base_url", default=DEFAULT_BASE_URL),
            api_version=read.string("api_version", default=DEFAULT_API_VERSION) or DEFAULT_API_VERSION,
            http=read.http_config(),
        )

    @property
    def endpoint(self) -> str:
        """``<base_url>/<api_version>/<audience_id>/users``."""
        return f"{self.base_url}/{self.api_version}/{self.audience_id}/users"

    @property
    def location(self) -> str:
        """The audience's users endpoint (no credentials)."""
        return url_without_credentials(self.endpoint)

    def settings(self) -> dict[str, Any]:
        """Public settings; the token shows as ``***``."""
        return {
            "location": self.location, "access_token": self.access_token,
            "default_country_code": self.default_country_code,
        }

    def hashed_row(self, record: Mapping[str, Any], schema: list[str]) -> list[str] | None:
        """The row of hashes for ``schema``; ``None`` when no identifier is usable."""
        row: list[str] = []
        for column in schema:
            if column == "EMAIL_SHA256":
                value = hash_email(record.get("email"))
            else:
                value = hash_phone(record.get("phone"), default_country_code=self.default_country_code)
            row.append(value or "")
        return row if any(row) else None

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        """Add (POST) or remove (DELETE) the batch's hashed identifiers; unusable records are skipped."""
        columns = set(batch.records.column_names)
        schema = [name for field, name in (("email", "EMAIL_SHA256"), ("phone", "PHONE_SHA256")) if field in columns]
        if not schema:
            raise DestinationError(
                f"facebook_custom_audience {self.location}: batch {batch.sequence} has neither an 'email' nor a 'phone' "
                "field; map one in the sync's identifiers or fields"
            )
        skipped: dict[str, str] = {}
        rows: list[tuple[str, list[str]]] = []
        for key, record in zip(batch.keys, batch.to_pylist(), strict=True):
            row = self.hashed_row(record, schema)
            if row is None:
                skipped[key] = SKIP_REASON
            else:
                rows.append((key, row))
        permanent: dict[str, str] = {}
        if not rows:
            return BatchResult(skipped=skipped)
        method = "DELETE" if batch.operation is Operation.REMOVE else "POST"
        key = batch_idempotency_key(run, batch)
        count = (len(rows) + MAX_USERS - 1) // MAX_USERS
        session_id = session_id_for(key)
        for index in range(count):
            part = rows[index * MAX_USERS:(index + 1) * MAX_USERS]
            body = encode_json({
                "payload": {"schema": schema, "data": [row for _, row in part]},
                "session": {
                    "session_id": session_id,
                    "batch_seq": index + 1,
                    "last_batch_flag": index == count - 1,
                    "estimated_num_total": len(rows),
                },
            })
            response = self.sender.request(
                method, self.endpoint, content=body, idempotency_key=chunk_key(key, index, count),
                what=f"batch {batch.sequence} ({batch.operation.value}, {len(part)} users)",
                classify=classify_graph_error,
            )
            self._map_invalid(response, part, permanent)
        return BatchResult(permanent=permanent, skipped=skipped)

    def _map_invalid(self, response: httpx.Response, part: list[tuple[str, list[str]]], permanent: dict[str, str]) -> None:
        try:
            answer = response.json()
        except ValueError:
            return
        if not isinstance(answer, dict) or not answer.get("num_invalid_entries"):
            return
        samples = answer.get("invalid_entry_samples") or {}
        if isinstance(samples, list):
            samples = {str(s): "invalid entry" for s in samples}
        mapped = 0
        if isinstance(samples, dict):
            for key, row in part:
                for value in row:
                    if value and value in samples:
                        permanent[key] = f"facebook: invalid entry: {str(samples[value])[:200]}"
                        mapped += 1
                        break
        unmapped = int(answer["num_invalid_entries"]) - mapped
        if unmapped > 0:
            logger.warning("facebook_custom_audience: %d invalid entr(ies) Facebook did not name; they cannot be tied to records", unmapped)
