"""Error answers: one exception type that carries the status and body a client sees.

Bodies follow Amplitude's shapes where it has one (``{"error": ...}`` on the Profile and Cohort APIs,
``{"code": ..., "error": ...}`` on the event endpoint). Nothing here ever carries a stack trace, SQL or
a file path: unexpected failures become a 500 with an opaque id that the server log explains.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An answer other than success: ``status``, a JSON ``body`` and optional ``headers``."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def bad_request(parameter: str, message: str) -> ApiError:
    """400 naming the parameter at fault."""
    return ApiError(400, {"error": f"{parameter}: {message}", "parameter": parameter})


def not_found(message: str) -> ApiError:
    return ApiError(404, {"error": message})
