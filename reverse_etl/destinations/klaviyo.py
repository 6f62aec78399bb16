"""Klaviyo profiles: bulk profile import jobs (JSON:API), polled until they complete.

A batch becomes one job (more when it passes 10,000 profiles or 5 MB):
``POST /api/profile-bulk-import-jobs/`` with headers ``Authorization: Klaviyo-API-Key <key>`` and
``revision``, then ``GET /api/profile-bulk-import-jobs/{id}/`` every ``poll_interval`` seconds until
its status is ``complete``. Profiles the job could not import are read from
``/api/profile-bulk-import-jobs/{id}/import-errors/`` (all pages) and tied back to their records by
the JSON pointer of each error (``/data/attributes/profiles/data/<index>/...``) or, failing that, by
the identifiers in its ``original_payload``.

Each record is a profile: ``external_id`` = ``user_id``, ``email`` (trimmed, lower-cased),
``phone_number`` (E.164, ``+`` and digits; ``default_country_code`` for national numbers), the other
fields in ``properties`` with a **membership property** (``in_<sync name>`` by default) ``true`` on
add / change and ``false`` on remove — Klaviyo profiles keep their consent and history, so a sync
never deletes one; a segment on the property follows the cohort. An identifier that is unusable
after normalising is left out; a record with none left is skipped.

Failures: errors coded ``invalid*`` / ``*validation*`` are permanent; any other import error is a
transient rejection (retried next run). A job ``cancelled`` or ``failed``, or still running after
``poll_timeout`` seconds, raises :class:`~reverse_etl.errors.TransientDestinationError` (the batch
is sent again next run; Klaviyo upserts, so a re-import is harmless). A 429 is retried after its
``Retry-After`` / ``RateLimit-Reset``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from reverse_etl.destinations.base import ALL_OPERATIONS, BatchResult, ChangeBatch, RunInfo, Secret
from reverse_etl.errors import TransientDestinationError
from reverse_etl.http import (
    HTTP_SETTINGS,
    HttpConfig,
    HttpRecordDestination,
    SenderOptions,
    Settings,
    batch_idempotency_key,
    chunk_indices,
    chunk_key,
    encode_json,
    url_without_credentials,
)
from reverse_etl.pii import normalise_email, normalise_phone, validate_country_code
from reverse_etl.spec import Operation

logger = logging.getLogger("reverse_etl.destinations.klaviyo")

MAX_PROFILES = 10_000
MAX_JOB_BYTES = 5 * 1024 * 1024
DEFAULT_BASE_URL = "https://a.klaviyo.com"
DEFAULT_REVISION = "2024-10-15"
JOBS_PATH = "/api/profile-bulk-import-jobs/"
# Bulk import: 10/s burst, 150/min steady.
REQUESTS_PER_SECOND = 2.5
SKIP_REASON = "no usable user_id, email or phone after normalising"
_POINTER_INDEX = re.compile(r"/profiles/data/(\d+)(?:/|$)")
_PERMANENT_CODE = re.compile(r"invalid|validation|duplicate|not_found|unsupported", re.IGNORECASE)
_PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,99}$")
_ENVELOPE = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": []}}}}


class KlaviyoProfilesDestination(HttpRecordDestination):
    """Imports profiles into Klaviyo with bulk import jobs, waiting for each job's outcome.

    Parameters
    ----------
    api_key
        A private API key with ``profiles:write`` (:class:`Secret` or text).
    membership_property
        Profile property set true on add / change and false on remove; default ``in_<sync name>``.
    default_country_code
        Country calling code for phone numbers without one; default none.
    revision
        The API revision header (``2024-10-15``).
    base_url
        API root (an emulator's URL in tests).
    poll_interval, poll_timeout
        Seconds between job status checks, and most seconds to wait for a job.
    max_job_bytes
        Most bytes of one job's body (Klaviyo: 5 MB); a batch above it is sent as several jobs.
    http
        Timeouts, retries and pace (:class:`~reverse_etl.http.HttpConfig`).
    sender_options
        Test hooks (``sleep``, ``random``, ``transport``); ``sleep`` also spaces the polls.
    """

    kind: ClassVar[str] = "klaviyo"
    max_batch_size: ClassVar[int | None] = MAX_PROFILES
    max_requests_per_second: ClassVar[float | None] = REQUESTS_PER_SECOND
    supported_operations = ALL_OPERATIONS
    any_identifier_of: ClassVar[frozenset[str]] = frozenset({"user_id", "email", "phone"})
    requires_consent: ClassVar[bool] = True

    def __init__(
        self,
        *,
        api_key: Secret | str,
        membership_property: str | None = None,
        default_country_code: str | None = None,
        revision: str = DEFAULT_REVISION,
        base_url: str = DEFAULT_BASE_URL,
        poll_interval: float = 1.0,
        poll_timeout: float = 600.0,
        max_job_bytes: int = MAX_JOB_BYTES,
        http: HttpConfig | None = None,
        sender_options: SenderOptions | None = None,
    ) -> None:
        self.max_job_bytes = max_job_bytes
        read = Settings(
            {"api_key": api_key, "membership_property": membership_property, "revision": revision,
             "base_url": base_url, "poll_interval": poll_interval, "poll_timeout": poll_timeout},
            destination_type=self.kind, sync_name=None,
            allowed=("api_key", "membership_property", "revision", "base_url", "poll_interval", "poll_timeout"),
        )
        self.api_key = read.secret("api_key")
        self.base_url = read.url("base_url")
        self.membership_property = read.string("membership_property")
        if self.membership_property is not None and not _PROPERTY_NAME.match(self.membership_property):
            raise read.error("membership_property", f"must be a plain property name, got {self.membership_property!r}")
        self.revision = read.string("revision", required=True) or DEFAULT_REVISION
        if not re.match(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$", self.revision):
            raise read.error("revision", f"must be a Klaviyo API revision like '2024-10-15', got {self.revision!r}")
        self.poll_interval = read.number("poll_interval", default=1.0) or 0.0
        self.poll_timeout = read.number("poll_timeout", default=600.0, exclusive=True) or 600.0
        self.default_country_code: str | None = None
        if default_country_code is not None:
            try:
                self.default_country_code = validate_country_code(default_country_code)
            except ValueError as exc:
                raise ValueError(f"{self.kind} destination: {exc}") from None
        options = sender_options or SenderOptions()
        self._sleep: Callable[[float], None] = options.sleep
        self._clock: Callable[[], float] = options.clock
        self.sender = self._make_sender(
            "klaviyo",
            http,
            headers={
                "Content-Type": "application/vnd.api+json",
                "Accept": "application/vnd.api+json",
                "revision": self.revision,
            },
            secret_headers={"Authorization": Secret(f"Klaviyo-API-Key {self.api_key.reveal()}")},
            secrets=[self.api_key],
            options=options,
        )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, sync_name: str, base_dir: Any = None) -> KlaviyoProfilesDestination:
        """Build from ``destinations.yml``: ``api_key`` (env), ``membership_property``,
        ``default_country_code``, ``revision``, ``base_url``, ``poll_interval``, ``poll_timeout``
        and the common HTTP settings.

        Raises
        ------
        ValueError
            Naming the setting that is missing or invalid.
        """
        read = Settings(
            settings, destination_type=cls.kind, sync_name=sync_name,
            allowed=("api_key", "membership_property", "default_country_code", "revision", "base_url",
                     "poll_interval", "poll_timeout", *HTTP_SETTINGS),
        )
        return cls(
            api_key=read.secret("api_key"),
            membership_property=read.string("membership_property"),
            default_country_code=read.string("default_country_code"),
            revision=read.string("revision", default=DEFAULT_REVISION) or DEFAULT_REVISION,
            base_url=read.url("base_url", default=DEFAULT_BASE_URL),
            poll_interval=read.number("poll_interval", default=1.0) or 0.0,
            poll_timeout=read.number("poll_timeout", default=600.0, exclusive=True) or 600.0,
            http=read.http_config(),
        )

    @property
    def location(self) -> str:
        """The bulk import endpoint (no credentials)."""
        return url_without_credentials(self.base_url) + JOBS_PATH

    def settings(self) -> dict[str, Any]:
        """Public settings; the key shows as ``***``."""
        return {
            "location": self.location, "api_key": self.api_key, "membership_property": self.membership_property,
            "revision": self.revision, "default_country_code": self.default_country_code,
        }

    def profile(self, record: Mapping[str, Any], operation: Operation, membership: str) -> dict[str, Any] | None:
        """The JSON:API profile of one record; ``None`` when no identifier is usable."""
        attributes: dict[str, Any] = {}
        user_id = record.get("user_id")
        if user_id is not None and str(user_id).strip():
            attributes["external_id"] = str(user_id).strip()
        email = normalise_email(record.get("email"))
        if email is not None:
            attributes["email"] = email
        phone = normalise_phone(record.get("phone"), default_country_code=self.default_country_code)
        if phone is not None:
            attributes["phone_number"] = "+" + phone
        if not attributes:
            return None
        properties: dict[str, Any] = {}
        if operation is not Operation.REMOVE:
            properties = {k: v for k, v in record.items() if k not in ("user_id", "email", "phone")}
        properties[membership] = operation is not Operation.REMOVE
        attributes["properties"] = properties
        return {"type": "profile", "attributes": attributes}

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        """Import the batch as job(s), wait for them, map import errors back to record keys."""
        membership = self.membership_property or f"in_{run.sync_name}"
        skipped: dict[str, str] = {}
        profiles: list[tuple[str, dict[str, Any], bytes]] = []
        for key, record in zip(batch.keys, batch.to_pylist(), strict=True):
            profile = self.profile(record, batch.operation, membership)
            if profile is None:
                skipped[key] = SKIP_REASON
            else:
                profiles.append((key, profile, encode_json(profile)))
        rejected: dict[str, str] = {}
        permanent: dict[str, str] = {}
        if not profiles:
            return BatchResult(skipped=skipped)
        batch_key = batch_idempotency_key(run, batch)
        chunks = list(chunk_indices(
            [len(encoded) for _, _, encoded in profiles], max_items=MAX_PROFILES, max_bytes=self.max_job_bytes,
            overhead=len(encode_json(_ENVELOPE)),
        ))
        jobs: list[tuple[str, list[tuple[str, dict[str, Any], bytes]]]] = []
        for index, span in enumerate(chunks):
            part = [profiles[i] for i in span]
            body = b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[' + b",".join(
                encoded for _, _, encoded in part) + b"]}}}}"
            response = self.sender.request(
                "POST", self.base_url + JOBS_PATH, content=body, idempotency_key=chunk_key(batch_key, index, len(chunks)),
                what=f"batch {batch.sequence} ({batch.operation.value}, {len(part)} profiles)",
            )
            jobs.append((self._job_id(response, batch.sequence), part))
        for job_id, part in jobs:
            failed = self._wait(job_id, batch.sequence)
            if failed:
                self._map_errors(job_id, part, failed, rejected, permanent)
        return BatchResult(rejected=rejected, permanent=permanent, skipped=skipped)

    def _job_id(self, response: httpx.Response, sequence: int) -> str:
        try:
            job_id = response.json()["data"]["id"]
        except (ValueError, KeyError, TypeError):
            job_id = None
        if not isinstance(job_id, str) or not job_id:
            raise TransientDestinationError(
                f"klaviyo: batch {sequence}: the job was accepted (HTTP {response.status_code}) but the answer names no job id; "
                "the next run sends the batch again"
            )
        return job_id

    def _wait(self, job_id: str, sequence: int) -> int:
        """Poll until the job completes; return its failed count."""
        url = f"{self.base_url}{JOBS_PATH}{job_id}/"
        deadline = self._clock() + self.poll_timeout
        status = "?"
        while True:
            response = self.sender.request("GET", url, what=f"batch {sequence}: job {job_id} status")
            try:
                attributes = response.json()["data"]["attributes"]
                status = str(attributes.get("status"))
            except (ValueError, KeyError, TypeError):
                attributes, status = {}, "unreadable"
            if status == "complete":
                return int(attributes.get("failed_count") or 0)
            if status in ("cancelled", "failed"):
                raise TransientDestinationError(
                    f"klaviyo: batch {sequence}: import job {job_id} ended {status}; the next run sends the batch again"
                )
            if self._clock() >= deadline:
                raise TransientDestinationError(
                    f"klaviyo: batch {sequence}: import job {job_id} still {status} after {self.poll_timeout:g} s "
                    "(poll_timeout); the next run sends the batch again"
                )
            if self.poll_interval > 0:
                self._sleep(self.poll_interval)

    def _map_errors(
        self, job_id: str, part: list[tuple[str, dict[str, Any], bytes]], failed: int,
        rejected: dict[str, str], permanent: dict[str, str],
    ) -> None:
        by_identifier: dict[tuple[str, str], str] = {}
        for key, profile, _ in part:
            for name in ("external_id", "email", "phone_number"):
                value = profile["attributes"].get(name)
                if value is not None:
                    by_identifier.setdefault((name, str(value)), key)
        url: str | None = f"{self.base_url}{JOBS_PATH}{job_id}/import-errors/"
        mapped = 0
        while url:
            response = self.sender.request("GET", url, what=f"job {job_id} import errors")
            try:
                answer = response.json()
            except ValueError:
                break
            for error in answer.get("data") or []:
                attributes = error.get("attributes") if isinstance(error, dict) else None
                if not isinstance(attributes, dict):
                    continue
                key = self._error_key(attributes, part, by_identifier)
                if key is None:
                    continue
                code = str(attributes.get("code") or "")
                detail = self.sender.redact(str(attributes.get("detail") or attributes.get("title") or code))[:200]
                reason = f"klaviyo {code}: {detail}" if code else f"klaviyo: {detail}"
                (permanent if _PERMANENT_CODE.search(code) else rejected)[key] = reason
                mapped += 1
            links = answer.get("links") if isinstance(answer, dict) else None
            next_url = links.get("next") if isinstance(links, dict) else None
            url = next_url if isinstance(next_url, str) and next_url else None
        if mapped < failed:
            logger.warning("klaviyo: job %s reported %d failed profile(s), %d tied to records", job_id, failed, mapped)

    @staticmethod
    def _error_key(
        attributes: Mapping[str, Any], part: list[tuple[str, dict[str, Any], bytes]], by_identifier: Mapping[tuple[str, str], str]
    ) -> str | None:
        source = attributes.get("source")
        pointer = source.get("pointer") if isinstance(source, dict) else None
        if isinstance(pointer, str):
            match = _POINTER_INDEX.search(pointer)
            if match and int(match.group(1)) < len(part):
                return part[int(match.group(1))][0]
        original = attributes.get("original_payload")
        if isinstance(original, dict):
            values = original.get("attributes", original)
            if isinstance(values, dict):
                for name in ("external_id", "email", "phone_number"):
                    if values.get(name) is not None and (name, str(values[name])) in by_identifier:
                        return by_identifier[(name, str(values[name]))]
        return None
