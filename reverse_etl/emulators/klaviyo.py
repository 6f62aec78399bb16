"""Klaviyo bulk profile import emulator: asynchronous jobs, import errors, 429 with rate-limit headers.

``POST /api/profile-bulk-import-jobs/`` (``Authorization: Klaviyo-API-Key <key>``, a ``revision``
header, a JSON:API body of at most 10,000 profiles and 5 MB) answers ``202`` with a queued job. The
job's profiles are validated and written when it is created (the point where Klaviyo has accepted
them); its status, read with ``GET /api/profile-bulk-import-jobs/{id}/``, goes ``queued`` ->
``processing`` -> ``complete`` over ``polls_to_complete`` reads. Profiles refused (no identifier,
an invalid e-mail or phone, or an error injected with ``record_errors``) are listed, paginated, at
``/api/profile-bulk-import-jobs/{id}/import-errors/`` with a JSON pointer to the profile.

A 429 carries ``Retry-After`` (per :class:`~reverse_etl.emulators.base.Faults`) and Klaviyo's
``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from reverse_etl.emulators.base import Emulator, Faults, Reply, Request

JOBS_PATH = "/api/profile-bulk-import-jobs/"
_JOB = re.compile(r"^/api/profile-bulk-import-jobs/([A-Za-z0-9_-]+)/?$")
_JOB_ERRORS = re.compile(r"^/api/profile-bulk-import-jobs/([A-Za-z0-9_-]+)/import-errors/?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def api_errors(status: int, code: str, title: str, detail: str = "", pointer: str = "/data/") -> Reply:
    """A JSON:API error answer."""
    return Reply(status, {"errors": [{"id": "emulator", "status": status, "code": code, "title": title,
                                      "detail": detail or title, "source": {"pointer": pointer}}]},
                 content_type="application/vnd.api+json")


@dataclass
class Job:
    """One bulk import job."""

    job_id: str
    total: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0


class KlaviyoEmulator(Emulator):
    """Keeps profiles by ``external_id`` (else e-mail, else phone).

    Parameters
    ----------
    api_key
        The only accepted private key.
    max_profiles, max_bytes
        Per job (Klaviyo: 10,000 profiles, 5 MB).
    polls_to_complete
        Status reads before a job shows ``complete`` (1 = at once).
    errors_page_size
        Import errors per page.
    membership_property
        When set, deliveries are labelled ``in`` / ``out`` by this property (else ``import``).
    record_errors
        ``identifier -> (code, detail)`` to refuse that profile with.
    job_status_override
        When set, every job ends with this status (``"cancelled"``) instead of ``complete``.
    faults, host, port
        See :class:`~reverse_etl.emulators.base.Emulator`.

    Attributes
    ----------
    profiles
        ``identifier -> attributes`` (with ``properties``) as imported.
    jobs
        ``job id -> Job``.
    """

    name: ClassVar[str] = "klaviyo"

    def __init__(
        self,
        *,
        api_key: str,
        max_profiles: int = 10_000,
        max_bytes: int = 5 * 1024 * 1024,
        polls_to_complete: int = 2,
        errors_page_size: int = 100,
        membership_property: str | None = None,
        record_errors: Mapping[str, tuple[str, str]] | None = None,
        job_status_override: str | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(faults=faults, host=host, port=port)
        self.api_key = api_key
        self.max_profiles = max_profiles
        self.max_bytes = max_bytes
        self.polls_to_complete = polls_to_complete
        self.errors_page_size = errors_page_size
        self.membership_property = membership_property
        self.record_errors: dict[str, tuple[str, str]] = dict(record_errors or {})
        self.job_status_override = job_status_override
        self.profiles: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, Job] = {}

    def profile(self, identifier: str) -> dict[str, Any] | None:
        """A copy of one profile."""
        with self.lock:
            found = self.profiles.get(identifier)
            return {**found, "properties": dict(found.get("properties", {}))} if found is not None else None

    def wait_headers(self, wait: float | None) -> dict[str, str]:
        headers = super().wait_headers(wait)
        if wait is not None:
            headers.update({"RateLimit-Limit": "10, 10;w=1, 150;w=60", "RateLimit-Remaining": "0",
                            "RateLimit-Reset": str(max(1, math.ceil(wait)))})
        return headers

    def throttle_reply(self, wait: float | None, *, message: str = "rate limit exceeded") -> Reply:
        reply = api_errors(429, "throttled", "Request was throttled.", "Request was throttled. Expected available in 1 second.")
        reply.headers.update(self.wait_headers(wait))
        return reply

    def authenticate(self, request: Request) -> Reply | None:
        scheme, _, key = (request.header("authorization") or "").partition(" ")
        if scheme != "Klaviyo-API-Key" or key.strip() != self.api_key:
            return api_errors(401, "not_authenticated", "Authentication credentials were not provided.",
                              "Missing or invalid private key.")
        if not request.header("revision"):
            return api_errors(400, "invalid", "Invalid revision header", "A revision header is required.")
        return None

    def is_batch(self, request: Request) -> bool:
        return request.method == "POST" and request.path == JOBS_PATH

    def handle(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == JOBS_PATH:
            return self._create(request)
        if request.method == "GET":
            match = _JOB_ERRORS.match(request.path)
            if match:
                return self._errors(request, match.group(1))
            match = _JOB.match(request.path)
            if match:
                return self._status(match.group(1))
        return api_errors(404, "not_found", f"No route {request.method} {request.path}")

    def _create(self, request: Request) -> Reply:
        if len(request.body) > self.max_bytes:
            return api_errors(413, "payload_too_large", "Payload too large", f"{len(request.body)} bytes > {self.max_bytes}")
        try:
            body = request.json()
            data = body["data"]
            if data["type"] != "profile-bulk-import-job":
                return api_errors(400, "invalid", "Invalid input.", "data.type must be profile-bulk-import-job", "/data/type")
            profiles = data["attributes"]["profiles"]["data"]
        except (ValueError, KeyError, TypeError):
            return api_errors(400, "invalid", "Invalid input.", "expected data.attributes.profiles.data", "/data/attributes")
        if not isinstance(profiles, list) or not profiles:
            return api_errors(400, "invalid", "Invalid input.", "profiles.data must be a non-empty list")
        if len(profiles) > self.max_profiles:
            return api_errors(400, "invalid", "Invalid input.", f"{len(profiles)} profiles > {self.max_profiles} per job")
        job = Job(job_id=f"job{len(self.jobs) + 1:05d}", total=len(profiles))
        imported: dict[str, list[str]] = {}
        for index, profile in enumerate(profiles):
            pointer = f"/data/attributes/profiles/data/{index}"
            attributes = profile.get("attributes") if isinstance(profile, dict) and profile.get("type") == "profile" else None
            if not isinstance(attributes, dict):
                job.errors.append(self._error("invalid", "profile must be {type: profile, attributes}", pointer, profile))
                continue
            identity = attributes.get("external_id") or attributes.get("email") or attributes.get("phone_number")
            problem = None
            if not identity:
                problem = ("invalid", "a profile needs an email, phone_number or external_id")
            elif attributes.get("email") is not None and not _EMAIL.match(str(attributes["email"])):
                problem, pointer = ("invalid", f"Invalid email address {attributes['email']}"), pointer + "/attributes/email"
            elif attributes.get("phone_number") is not None and not _E164.match(str(attributes["phone_number"])):
                problem, pointer = ("invalid", "Invalid phone number format (E.164 expected)"), pointer + "/attributes/phone_number"
            elif str(identity) in self.record_errors:
                problem = self.record_errors[str(identity)]
            if problem is not None:
                job.errors.append(self._error(problem[0], problem[1], pointer, profile))
                continue
            properties = attributes.get("properties") or {}
            operation = "import"
            if self.membership_property is not None:
                operation = "out" if properties.get(self.membership_property) is False else "in"
            imported.setdefault(operation, []).append(str(identity))
            if not self.keep_record():
                continue
            held = self.profiles.setdefault(str(identity), {"properties": {}})
            for name, value in attributes.items():
                if name == "properties":
                    held["properties"].update(value)
                else:
                    held[name] = value
        self.jobs[job.job_id] = job
        for operation, ids in imported.items():
            self.record_delivery(request, operation, ids)
        return Reply(202, self._job_document(job, "queued"), content_type="application/vnd.api+json")

    @staticmethod
    def _error(code: str, detail: str, pointer: str, original: Any) -> dict[str, Any]:
        return {"code": code, "title": "Invalid input." if code == "invalid" else code, "detail": detail,
                "source": {"pointer": pointer}, "original_payload": original}

    def _job_document(self, job: Job, status: str) -> dict[str, Any]:
        done = status == "complete"
        return {"data": {"type": "profile-bulk-import-job", "id": job.job_id, "attributes": {
            "status": status, "total_count": job.total,
            "completed_count": job.total - len(job.errors) if done else 0,
            "failed_count": len(job.errors) if done else 0,
        }, "links": {"self": f"{self.url}{JOBS_PATH}{job.job_id}/"}}}

    def _status(self, job_id: str) -> Reply:
        job = self.jobs.get(job_id)
        if job is None:
            return api_errors(404, "not_found", f"Job {job_id} not found")
        job.polls += 1
        if job.polls >= self.polls_to_complete:
            status = self.job_status_override or "complete"
        else:
            status = "processing"
        return Reply(200, self._job_document(job, status), content_type="application/vnd.api+json")

    def _errors(self, request: Request, job_id: str) -> Reply:
        job = self.jobs.get(job_id)
        if job is None:
            return api_errors(404, "not_found", f"Job {job_id} not found")
        start = int(request.param("page[cursor]") or 0)
        page = job.errors[start:start + self.errors_page_size]
        following = start + self.errors_page_size
        links: dict[str, Any] = {"self": f"{self.url}{request.path}", "next": None}
        if following < len(job.errors):
            links["next"] = f"{self.url}{JOBS_PATH}{job_id}/import-errors/?page[cursor]={following}"
        data = [{"type": "import-error", "id": f"{job_id}-{start + i}", "attributes": e} for i, e in enumerate(page)]
        return Reply(200, {"data": data, "links": links}, content_type="application/vnd.api+json")
