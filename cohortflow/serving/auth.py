"""API keys, scopes and per-key rate limits.

``Authorization: Api-Key <key>`` (Amplitude's scheme; ``Bearer`` is accepted too). The presented key
is hashed and compared with every declared key's hash in constant time; a missing or unknown key is a
401, a key without the endpoint's scope a 403, a key over its rate limit a 429 with ``Retry-After``.
Rate limits are counted per key in this server process (``limits``' sliding-window counter).
"""

from __future__ import annotations

import hmac
import math
import time
from typing import Callable

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from cohortflow.serving.errors import ApiError
from cohortflow.serving.settings import ApiKey, Scope, ServingSettings, key_digest

__all__ = ["ApiKey", "KeyRing", "Scope", "authenticate", "require_scope"]

_SCHEMES = ("api-key", "bearer")
# Declared so that the OpenAPI schema (and /docs' Authorize button) shows how to authenticate.
_AUTHORIZATION = APIKeyHeader(
    name="Authorization", scheme_name="ApiKey", auto_error=False,
    description="`Api-Key <key>`: keys and their scopes are declared in serving.yml",
)


class KeyRing:
    """The server's keys (hashes only) and their rate-limit counters."""

    def __init__(self, settings: ServingSettings) -> None:
        self.keys = settings.keys
        self._limits = {key.name: parse(key.rate_limit) for key in self.keys}
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    def find(self, presented: str) -> ApiKey | None:
        digest = key_digest(presented)
        found = None
        for key in self.keys:  # every key compared, found or not: the time does not depend on which
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def charge(self, key: ApiKey) -> None:
        """Count one request against the key's limit; 429 with Retry-After when it is spent."""
        limit = self._limits[key.name]
        if self._limiter.hit(limit, key.name):
            return
        reset = self._limiter.get_window_stats(limit, key.name).reset_time
        retry_after = max(1, math.ceil(reset - time.time()))
        raise ApiError(
            429,
            {"code": 429, "error": f"Too many requests for this API key: its limit is {key.rate_limit}"},
            {"Retry-After": str(retry_after)},
        )


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in _SCHEMES or not value.strip():
        return None
    return value.strip()


def authenticate(request: Request, raw_key: str | None, scope: Scope) -> ApiKey:
    """The key behind a request (from ``raw_key`` when given, else the Authorization header), checked
    for ``scope`` and charged against its rate limit.

    Raises
    ------
    ApiError
        401 missing / invalid key, 403 missing scope, 429 over the rate limit.
    """
    ring: KeyRing = request.app.state.keys
    presented = raw_key if raw_key else _presented_key(request)
    if not presented:
        raise ApiError(
            401,
            {"error": "Missing API key: send the header 'Authorization: Api-Key <your key>'"},
            {"WWW-Authenticate": "Api-Key"},
        )
    key = ring.find(presented)
    if key is None:
        raise ApiError(401, {"error": "Invalid API key"}, {"WWW-Authenticate": "Api-Key"})
    if scope not in key.scopes:
        raise ApiError(403, {"error": f"This API key does not have the scope {scope.value}"})
    ring.charge(key)
    return key


def require_scope(scope: Scope) -> Callable[[Request], ApiKey]:
    """A FastAPI dependency: ``key: ApiKey = Depends(require_scope(Scope.READ_PROFILES))``."""

    async def dependency(request: Request, authorization: str | None = Security(_AUTHORIZATION)) -> ApiKey:
        return authenticate(request, None, scope)

    dependency.__name__ = f"require_{scope.name.lower()}"
    return dependency
