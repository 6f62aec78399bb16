"""Shapes shared by every endpoint: freshness and the error body (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class Freshness(BaseModel):
    """How fresh an answer's data is."""

    snapshot_id: str = Field(description="The serving snapshot the answer was read from.")
    data_as_of: str = Field(description="The moment the data was computed as of (UTC).")
    published_at: str = Field(description="When the pipeline published the snapshot (UTC).")
    data_age_seconds: int = Field(description="Seconds from data_as_of to this answer.")


class ErrorBody(BaseModel):
    """Every error: ``error`` says what is wrong; ``parameter`` names the input at fault when there is one."""

    model_config = ConfigDict(extra="allow")

    error: str
    code: Optional[int] = None
    parameter: Optional[str] = None
    error_id: Optional[str] = None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


# What any authenticated endpoint can answer besides success.
COMMON_ERRORS = error_responses(400, 401, 403, 404, 422, 429, 500, 503)
