"""The FastAPI application behind `cohortflow serve`.

``create_app(settings)`` builds it from injected settings (nothing is read at import time). Every
error is JSON with an ``error`` message; no answer carries a stack trace, SQL or a file path.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cohortflow.serving.auth import KeyRing
from cohortflow.serving.errors import ApiError
from cohortflow.serving.schemas import COMMON_ERRORS, Freshness
from cohortflow.serving.settings import ServingSettings
from cohortflow.serving.snapshot import SnapshotStore

log = logging.getLogger("cohortflow.serving")

DESCRIPTION = """\
Profiles, cohorts and events of a cohortflow project, read from the snapshot the pipeline last
published (every answer says how fresh it is: the `freshness` field and the `X-Cohortflow-*` headers).

Authenticate with `Authorization: Api-Key <key>` (keys and their scopes: `serving.yml`).
"""


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _parameter(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return ".".join(parts) or "request"


def create_app(settings: ServingSettings) -> FastAPI:
    """The API for one project's warehouse folder (its serving snapshots and landing folder)."""
    from cohortflow.serving import cohorts, events, profiles

    app = FastAPI(
        title="cohortflow API",
        version="1",
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "Profile API", "description": "One user's attributes, computed properties, cohorts, recommendations and propensities."},
            {"name": "Cohort API", "description": "List, download and upload cohorts."},
            {"name": "Events", "description": "Amplitude HTTP V2 compatible event endpoint."},
        ],
    )
    app.state.settings = settings
    app.state.snapshots = SnapshotStore(settings.serving_dir, settings.snapshot_poll_seconds)
    app.state.keys = KeyRing(settings)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.body, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        parameter = _parameter(tuple(first.get("loc", ())))
        return _error(422, {"error": f"{parameter}: {first.get('msg', 'invalid')}", "parameter": parameter})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        return _error(exc.status_code, {"error": message}, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.exception("error %s answering %s %s", error_id, request.method, request.url.path)
        return _error(500, {"error": "Internal error; the server log has its details", "error_id": error_id})

    @app.get("/health", tags=["Service"], summary="Is the API up, and how fresh is its data?",
             responses={503: COMMON_ERRORS[503]})
    async def health(request: Request) -> dict[str, Any]:
        snapshot = request.app.state.snapshots.current()
        return {"status": "ok", "freshness": Freshness(**snapshot.freshness())}

    for module in (profiles, cohorts, events):
        app.include_router(module.router, responses=COMMON_ERRORS)
    return app


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory`` (several worker processes): settings from the environment."""
    from cohortflow.serving.settings import load_settings

    return create_app(load_settings())
