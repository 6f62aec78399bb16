"""A signed cohort webhook: batches of users entering or leaving a cohort, in Amplitude's payload.

Each batch is one ``POST`` of::

    {"cohort_name": "VIP buyers", "cohort_id": "vip_buyers", "in_cohort": true,
     "computed_time": "1772366400", "message_id": "<idempotency key>",
     "users": [{"user_id": "u1", "user_properties": {"email": "a@example.com", "ltv": 120.5}}]}

``in_cohort`` is ``false`` for a remove batch (the users carry the values last sent), ``true`` for adds
and changes; ``message_id`` is the batch's idempotency key, the same on every retry, so the receiver
drops a second delivery. ``user_properties`` holds every field but ``user_id``.

Signature: ``X-Cohortflow-Timestamp: <unix seconds>`` and
``X-Cohortflow-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``. A receiver
recomputes it over the raw bytes it received, compares in constant time and refuses timestamps more
than a few minutes away (replay protection); see :func:`verify_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC
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

SIGNATURE_HEADER = "X-Cohortflow-Signature"
TIMESTAMP_HEADER = "X-Cohortflow-Timestamp"
DEFAULT_MAX_USERS = 10_000
DEFAULT_TIMEOUT = 10.0


def sign(secret: Secret | str, timestamp: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256(secret, ``<timestamp>.<body>``)."""
    key = secret.reveal() if isinstance(secret, Secret) else secret
    mac = hmac.new(key.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: Secret | str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """For receivers: True when ``headers`` carry a valid, fresh signature of the raw ``body``.

    Parameters
    ----------
    secret
        The shared secret.
    headers
        The request headers (any case).
    body
        The raw request body, as received (not re-serialised JSON).
    tolerance
        Most seconds between the signed timestamp and ``now``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    given = lowered.get(SIGNATURE_HEADER.lower())
    if not timestamp or not given:
        return False
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), given.strip())


class WebhookDestination(HttpRecordDestination):
    """POSTs signed cohort batches (Amplitude's cohort-webhook payload) to a URL.

    Parameters
    ----------
    url
        The receiver's URL (http or https).
    secret
        Signing secret (a :class:`Secret` or a plain string, wrapped).
    cohort_name, cohort_id
        Sent in every batch; default: the sync name.
    max_batch_size
        Users per request (default 10,000).
    http
        Timeouts, retries and pace (:class:`~reverse_etl.http.HttpConfig`; default read timeout 10 s).
    sender_options
        Test hooks (``sleep``, ``random``, ``transport``).
    """

    kind: ClassVar[str] = "webhook"
    max_batch_size: ClassVar[int | None] = DEFAULT_MAX_USERS
    max_requests_per_second: ClassVar[float | None] = None
    supported_operations = ALL_OPERATIONS
    required_identifiers: ClassVar[frozenset[str]] = frozenset({"user_id"})

    def __init__(
        self,
        url: str,
        *,
        secret: Secret | str,
        cohort_name: str | None = None,
        cohort_id: str | None = None,
        max_batch_size: int = DEFAULT_MAX_USERS,
        http: HttpConfig | None = None,
        sender_options: SenderOptions | None = None,
    ) -> None:
        checked = Settings(
            {"url": url, "secret": secret, "max_batch_size": max_batch_size},
            destination_type="webhook", sync_name=None, allowed=("url", "secret", "max_batch_size"),
        )
        self.url = checked.url("url")
        self.secret = checked.secret("secret")
        self.cohort_name = cohort_name
        self.cohort_id = cohort_id
        self.max_batch_size = checked.integer("max_batch_size", default=DEFAULT_MAX_USERS, maximum=1_000_000)  # type: ignore[misc]
        self.sender = self._make_sender(
            f"webhook {url_without_credentials(self.url)}",
            http or HttpConfig(read_timeout=DEFAULT_TIMEOUT),
            headers={"Content-Type": "application/json"},
            secrets=[self.secret],
            options=sender_options,
        )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, sync_name: str, base_dir: Any = None) -> WebhookDestination:
        """Build from ``destinations.yml``: ``url``, ``secret`` (env), ``cohort_name``, ``cohort_id``,
        ``max_batch_size`` and the common HTTP settings.

        Raises
        ------
        ValueError
            Naming the setting that is missing or invalid.
        """
        read = Settings(
            settings, destination_type="webhook", sync_name=sync_name,
            allowed=("url", "secret", "cohort_name", "cohort_id", "max_batch_size", *HTTP_SETTINGS),
        )
        return cls(
            read.url("url"),
            secret=read.secret("secret"),
            cohort_name=read.string("cohort_name", default=sync_name),
            cohort_id=read.string("cohort_id", default=sync_name),
            max_batch_size=read.integer("max_batch_size", default=DEFAULT_MAX_USERS, maximum=1_000_000),
            http=read.http_config(read_timeout=DEFAULT_TIMEOUT),
        )

    @property
    def location(self) -> str:
        """The URL without credentials or query."""
        return url_without_credentials(self.url)

    def settings(self) -> dict[str, Any]:
        """Public settings; the secret shows as ``***``."""
        return {
            "location": self.location, "secret": self.secret, "cohort_name": self.cohort_name,
            "cohort_id": self.cohort_id, "max_batch_size": self.max_batch_size,
        }

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        """POST the batch (split by ``max_batch_size``); users without a ``user_id`` are skipped."""
        users: list[dict[str, Any]] = []
        skipped: dict[str, str] = {}
        rejected: dict[str, str] = {}
        first_key_of: dict[str, str] = {}
        for key, record in zip(batch.keys, batch.to_pylist(), strict=True):
            user_id = record.get("user_id")
            if user_id is None or (isinstance(user_id, str) and not user_id.strip()):
                skipped[key] = "no user_id (unresolved mapping)"
                continue
            user_id = str(user_id)
            if user_id in first_key_of:
                # A receiver keys members by user_id: two records for one user in one batch would
                # race. The second goes in a later run.
                rejected[key] = f"user_id {user_id!r} is also record {first_key_of[user_id]!r} of this batch; sent again next run"
                continue
            first_key_of[user_id] = key
            users.append({"user_id": user_id, "user_properties": {k: v for k, v in record.items() if k != "user_id"}})
        if not users:
            return BatchResult(rejected=rejected, skipped=skipped)

        # The batch's own time, not the run's: a replay after a crash must carry the same bytes.
        made = batch.created_at or run.started_at
        computed_time = str(int((made if made.tzinfo else made.replace(tzinfo=UTC)).timestamp()))
        key = batch_idempotency_key(run, batch)
        size = self.max_batch_size or DEFAULT_MAX_USERS
        count = (len(users) + size - 1) // size
        for index in range(count):
            part = users[index * size:(index + 1) * size]
            message_id = chunk_key(key, index, count)
            body = encode_json({
                "cohort_name": self.cohort_name or run.sync_name,
                "cohort_id": self.cohort_id or run.sync_name,
                "in_cohort": batch.operation is not Operation.REMOVE,
                "computed_time": computed_time,
                "message_id": message_id,
                "users": part,
            })
            self.sender.request(
                "POST", self.url, content=body, idempotency_key=message_id,
                what=f"batch {batch.sequence} ({batch.operation.value}, {len(part)} users)",
                sign=self._signature_headers,
            )
        return BatchResult(rejected=rejected, skipped=skipped)

    def _signature_headers(self, body: bytes) -> dict[str, str]:
        # A fresh timestamp per attempt, so a retry after a long Retry-After is not refused as stale.
        timestamp = str(int(time.time()))
        return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(self.secret, timestamp, body)}
