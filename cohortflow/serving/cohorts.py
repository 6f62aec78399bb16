"""The Cohort API, in Amplitude's shapes: list cohorts, download members, upload and change cohorts.

- ``GET /api/3/cohorts`` and ``GET /api/3/cohorts/{cohort_id}``: the registry (marts.cohorts) with
  size, kind, last computed time, definition and the syncs that ship each cohort (read:cohorts).
- ``GET /api/5/cohorts/request/{cohort_id}`` → ``GET /api/5/cohorts/request-status/{request_id}`` →
  ``GET /api/5/cohorts/request/{request_id}/file``: members as CSV or JSON, with properties, built in
  the background from the snapshot current at the request (:mod:`cohortflow.serving.downloads`).
- ``POST /api/3/cohorts/upload`` and ``POST /api/3/cohorts/membership``: an uploaded cohort, and adds /
  removes of its members (write:cohorts). Checked here, landed as one complete file
  (:mod:`cohortflow.serving.uploads`), applied by the next pipeline run; the API never writes the
  warehouse.

Reads come from one serving snapshot per request; every JSON answer carries its ``freshness``.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any, Literal, Optional

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from cohortflow.declarations import did_you_mean
from cohortflow.serving import downloads, uploads
from cohortflow.serving.auth import ApiKey, Scope, require_scope
from cohortflow.serving.errors import ApiError, bad_request, not_found
from cohortflow.serving.schemas import ErrorBody, Freshness
from cohortflow.serving.snapshot import Snapshot

router = APIRouter(tags=["Cohort API"])

_COHORT_ID = Path(min_length=1, max_length=uploads.MAX_ID_LENGTH, description="The cohort's id (GET /api/3/cohorts).")
_REQUEST_ID = Path(min_length=1, max_length=64, description="The request_id a download request answered with.")


# --- shapes (documented in the OpenAPI schema) ----------------------------------------------------


class CohortSync(BaseModel):
    name: str = Field(description="The sync (an exposure with meta.sync in the dbt project).")
    destination: str
    destination_type: str
    cadence: str = Field(description="on_demand, hourly, daily, every_minute or a cron expression (UTC).")


class Cohort(BaseModel):
    id: str
    name: str
    description: Optional[str] = None
    kind: Literal["behavioural", "predictive", "uploaded"]
    is_predictive: bool
    is_uploaded: bool
    owner: Optional[str] = None
    owners: list[str]
    size: int = Field(description="Members at data_as_of.")
    last_computed: Optional[int] = Field(description="When the pipeline last computed it, seconds since the epoch (UTC).")
    last_computed_at: Optional[str] = None
    data_as_of: Optional[str] = Field(default=None, description="The moment its members hold for (UTC).")
    definition: Optional[dict[str, Any]] = Field(
        description="The compiled definition (Amplitude's andClauses / orClauses); null for an uploaded cohort.")
    syncs: list[CohortSync]


class CohortList(BaseModel):
    cohorts: list[Cohort]
    freshness: Freshness


class CohortAnswer(BaseModel):
    cohort: Cohort
    freshness: Freshness


class DownloadRequested(BaseModel):
    request_id: str
    cohort_id: str
    async_status: str
    status_url: str
    file_url: str
    freshness: Freshness


class DownloadStatus(BaseModel):
    request_id: str
    cohort_id: str
    async_status: Literal["JOB INPROGRESS", "JOB COMPLETED", "JOB FAILED"]
    format: Literal["csv", "json"]
    props: bool
    prop_keys: list[str]
    rows: Optional[int] = None
    created_at: str
    completed_at: Optional[str] = None
    error: Optional[str] = None
    file_url: Optional[str] = None
    freshness: Freshness = Field(description="The snapshot the file is (being) built from.")


class CohortUpload(BaseModel):
    """``POST /api/3/cohorts/upload``: a cohort from a list of ids (Amplitude's body)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=uploads.MAX_NAME_LENGTH)
    id_type: Literal["BY_USER_ID", "BY_AMP_ID"] = Field(description="BY_USER_ID (BY_AMP_ID is refused: there are no Amplitude ids here).")
    ids: list[Any] = Field(description="User ids: non-empty strings of at most 255 characters, no control characters. "
                                       "Invalid ones are dropped and counted, repeats collapsed.")
    owner: Optional[str] = Field(default=None, max_length=uploads.MAX_NAME_LENGTH, description="Default: the API key's name.")
    description: Optional[str] = Field(default=None, max_length=uploads.MAX_TEXT_LENGTH)
    existing_cohort_id: Optional[str] = Field(default=None, max_length=uploads.MAX_ID_LENGTH,
                                              description="Replace the members of this uploaded cohort with these ids.")
    app_id: Optional[int | str] = Field(default=None, description="Accepted for Amplitude clients; ignored.")
    published: Optional[bool] = Field(default=None, description="Accepted for Amplitude clients; ignored.")


class MembershipChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Any]
    id_type: Literal["BY_USER_ID", "BY_AMP_ID"] = "BY_USER_ID"
    operation: Literal["ADD", "REMOVE"]


class MembershipUpdate(BaseModel):
    """``POST /api/3/cohorts/membership``: add / remove members of an uploaded cohort, in order."""

    model_config = ConfigDict(extra="forbid")

    cohort_id: str = Field(min_length=1, max_length=uploads.MAX_ID_LENGTH)
    memberships: list[MembershipChange] = Field(min_length=1, max_length=uploads.MAX_CHANGES_PER_REQUEST)
    skip_invalid_ids: bool = Field(default=True, description="false: refuse the whole request when any id is invalid.")


class InvalidId(BaseModel):
    id: str
    reason: str


class UploadAnswer(BaseModel):
    cohort_id: str
    name: str
    received: int = Field(description="Ids in the request.")
    matched: int = Field(description="Distinct valid ids that are known users now.")
    unmatched: int = Field(description="Distinct valid ids not known (yet): kept, members once they are users.")
    invalid: int
    duplicates: int
    invalid_sample: list[InvalidId]
    replaced: bool
    applied: str = Field(description="When the change takes effect.")
    freshness: Freshness


class MembershipResult(BaseModel):
    operation: Literal["ADD", "REMOVE"]
    id_type: str
    received: int
    accepted: int
    matched: int
    unmatched: int
    invalid: int
    duplicates: int
    skipped_ids: list[str]
    invalid_sample: list[InvalidId]


class MembershipAnswer(BaseModel):
    cohort_id: str
    memberships_result: list[MembershipResult]
    applied: str
    freshness: Freshness


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined (openapi_extra cannot carry ``$defs``)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _inline_schema(model)}}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


# --- helpers --------------------------------------------------------------------------------------


def _json(content: dict[str, Any], snapshot_headers: dict[str, str], status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=snapshot_headers)


def _epoch(text: str | None) -> int | None:
    if not text:
        return None
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


_COHORT_COLUMNS = "cohort_id, cohort_name, description, kind, owner, size, computed_at, last_computed_at, definition, syncs"


def _cohort(row: tuple) -> dict[str, Any]:
    cohort_id, name, description, kind, owner, size, computed_at, last_computed_at, definition, syncs = row
    return {
        "id": cohort_id,
        "name": name,
        "description": description,
        "kind": kind,
        "is_predictive": kind == "predictive",
        "is_uploaded": kind == "uploaded",
        "owner": owner,
        "owners": [owner] if owner else [],
        "size": size,
        "last_computed": _epoch(last_computed_at),
        "last_computed_at": f"{last_computed_at}Z" if last_computed_at else None,
        "data_as_of": f"{computed_at}Z" if computed_at else None,
        "definition": orjson.loads(definition) if definition else None,
        "syncs": orjson.loads(syncs) if syncs else [],
    }


def _find_cohort(db: sqlite3.Connection, cohort_id: str) -> tuple | None:
    return db.execute(f"select {_COHORT_COLUMNS} from cohorts where cohort_id = ?", (cohort_id,)).fetchone()


def _unknown_cohort(db: sqlite3.Connection, cohort_id: str, parameter: str = "cohort_id") -> ApiError:
    known = [r[0] for r in db.execute("select cohort_id from cohorts order by cohort_id")]
    return ApiError(404, {"error": f"No cohort with id {cohort_id!r}{did_you_mean(cohort_id, known)}", "parameter": parameter})


def _jobs(request: Request) -> downloads.DownloadJobs:
    jobs = getattr(request.app.state, "cohort_downloads", None)
    if jobs is None:
        jobs = downloads.DownloadJobs(request.app.state.settings.exports_dir)
        request.app.state.cohort_downloads = jobs
    return jobs


def _property_keys(request: Request, snapshot: Snapshot) -> list[str]:
    cache = getattr(request.app.state, "cohort_property_keys", None)
    if cache is None or cache[0] != snapshot.id:
        cache = (snapshot.id, downloads.property_keys(snapshot.db))
        request.app.state.cohort_property_keys = cache
    return cache[1]


async def _read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, read up to ``limit`` bytes (413 beyond: nothing is written)."""
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, {"code": 413, "error": f"Request body too large: at most {limit:,} bytes", "parameter": "body"})
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise bad_request("body", "not valid JSON") from None


def _parse(model: type[BaseModel], document: Any) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error.get("loc", ())) or "body"
        message = error.get("msg", "invalid")
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        raise bad_request(location, message) from None


def _refuse_amp_ids(id_type: str, parameter: str) -> None:
    if id_type not in uploads.SUPPORTED_ID_TYPES:
        raise bad_request(
            parameter,
            f"{id_type} is not supported: cohortflow has no Amplitude ids; send user ids with id_type BY_USER_ID",
        )


def _uploaded_cohort(request: Request, snapshot: Snapshot, cohort_id: str, parameter: str) -> str:
    """The name of the uploaded cohort ``cohort_id``: 404 when unknown, 409 when computed from a definition."""
    row = _find_cohort(snapshot.db, cohort_id)
    if row is not None and row[3] != "uploaded":
        raise ApiError(409, {
            "error": f"Cohort {cohort_id!r} is a {row[3]} cohort, computed from its definition in the dbt project; "
                     "only uploaded cohorts can be replaced or changed member by member",
            "parameter": parameter,
        })
    if row is not None:
        return row[1]
    if uploads.is_registered_upload(request.app.state.settings.landing_dir, cohort_id):
        return cohort_id  # uploaded, not in a snapshot yet
    raise _unknown_cohort(snapshot.db, cohort_id, parameter)


_APPLIED = "accepted; the next pipeline run (`cohortflow run` or the scheduled refresh) applies it"


# --- listing --------------------------------------------------------------------------------------


@router.get("/api/3/cohorts", response_model=CohortList, summary="Every cohort: size, kind, definition and syncs")
async def list_cohorts(request: Request, key: ApiKey = Depends(require_scope(Scope.READ_COHORTS))) -> Response:
    snapshot: Snapshot = request.app.state.snapshots.current()
    rows = snapshot.db.execute(f"select {_COHORT_COLUMNS} from cohorts order by cohort_name, cohort_id").fetchall()
    return _json({"cohorts": [_cohort(row) for row in rows], "freshness": snapshot.freshness()}, snapshot.headers)


@router.get("/api/3/cohorts/{cohort_id}", response_model=CohortAnswer, summary="One cohort")
async def get_cohort(
    request: Request, cohort_id: str = _COHORT_ID, key: ApiKey = Depends(require_scope(Scope.READ_COHORTS))
) -> Response:
    snapshot: Snapshot = request.app.state.snapshots.current()
    row = _find_cohort(snapshot.db, cohort_id)
    if row is None:
        raise _unknown_cohort(snapshot.db, cohort_id)
    return _json({"cohort": _cohort(row), "freshness": snapshot.freshness()}, snapshot.headers)


# --- downloads ------------------------------------------------------------------------------------


@router.get(
    "/api/5/cohorts/request/{cohort_id}",
    status_code=202,
    response_model=DownloadRequested,
    summary="Request a download of a cohort's members (then poll request-status, then fetch the file)",
)
async def request_download(
    request: Request,
    cohort_id: str = _COHORT_ID,
    props: int = Query(default=0, ge=0, le=1, description="1: include user properties (all, or those in prop_keys)."),
    prop_keys: Optional[str] = Query(default=None, max_length=4000, description="Properties to include, comma-separated (needs props=1)."),
    propKeys: Optional[str] = Query(default=None, max_length=4000, description="Amplitude's spelling of prop_keys."),  # noqa: N803
    format: Literal["csv", "json"] = Query(default="csv", description="csv, or json (an array of objects)."),
    key: ApiKey = Depends(require_scope(Scope.READ_COHORTS)),
) -> Response:
    snapshot: Snapshot = request.app.state.snapshots.current()
    row = _find_cohort(snapshot.db, cohort_id)
    if row is None:
        raise _unknown_cohort(snapshot.db, cohort_id)
    parameter = "prop_keys" if prop_keys is not None else "propKeys"
    listed = prop_keys if prop_keys is not None else propKeys
    chosen: tuple[str, ...] | None = None
    if listed is not None:
        if props != 1:
            raise bad_request(parameter, "properties are included only with props=1")
        names = list(dict.fromkeys(part.strip() for part in listed.split(",") if part.strip()))
        if not names:
            raise bad_request(parameter, "give property names, comma-separated")
        known = _property_keys(request, snapshot)
        unknown = [name for name in names if name not in known]
        if unknown:
            hint = did_you_mean(unknown[0], known)
            raise ApiError(400, {
                "error": f"{parameter}: unknown propert{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(repr(u) for u in unknown)}{hint} (known: {', '.join(known)})",
                "parameter": parameter,
                "unknown": unknown,
            })
        chosen = tuple(names)
    elif props == 1:
        chosen = tuple(_property_keys(request, snapshot))
    job_request = downloads.DownloadRequest(
        cohort_id=cohort_id, cohort_name=row[1], format=format, prop_keys=chosen, requested_by=key.name,
        snapshot={k: v for k, v in snapshot.freshness().items() if k != "data_age_seconds"},
    )
    # Opened now: the file is built from this snapshot, whatever is published meanwhile.
    job = _jobs(request).submit(job_request, snapshot.connect())
    request_id = job["request_id"]
    return _json({
        "request_id": request_id,
        "cohort_id": cohort_id,
        "async_status": job["async_status"],
        "status_url": f"/api/5/cohorts/request-status/{request_id}",
        "file_url": f"/api/5/cohorts/request/{request_id}/file",
        "freshness": snapshot.freshness(),
    }, snapshot.headers, status=202)


def _job_or_404(request: Request, request_id: str, key: ApiKey) -> dict[str, Any]:
    job = _jobs(request).status(request_id, key.name)
    if job is None:
        raise not_found("No download request with this id (ids are per API key; files are kept for a day)")
    return job


@router.get(
    "/api/5/cohorts/request-status/{request_id}",
    response_model=DownloadStatus,
    responses={202: {"model": DownloadStatus, "description": "Still being built (JOB INPROGRESS)."}},
    summary="Is the download ready? 202 while JOB INPROGRESS, 200 once JOB COMPLETED (or JOB FAILED)",
)
async def download_status(
    request: Request, request_id: str = _REQUEST_ID, key: ApiKey = Depends(require_scope(Scope.READ_COHORTS))
) -> Response:
    job = await run_in_threadpool(_job_or_404, request, request_id, key)
    body = {
        "request_id": job["request_id"],
        "cohort_id": job["cohort_id"],
        "async_status": job["async_status"],
        "format": job["format"],
        "props": job["props"],
        "prop_keys": job["prop_keys"],
        "rows": job.get("rows"),
        "created_at": job["created_at"],
        "completed_at": job.get("completed_at"),
        "error": job.get("error"),
        "file_url": f"/api/5/cohorts/request/{job['request_id']}/file" if job["async_status"] == downloads.COMPLETED else None,
        "freshness": downloads.freshness_of(job["snapshot"]),
    }
    status = 202 if job["async_status"] == downloads.IN_PROGRESS else 200
    return _json(body, downloads.snapshot_headers(job["snapshot"]), status=status)


@router.get(
    "/api/5/cohorts/request/{request_id}/file",
    response_class=FileResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}, "description": "The members."},
               **_errors(409)},
    summary="The downloaded members (CSV or JSON), once the request is JOB COMPLETED",
)
async def download_file(
    request: Request, request_id: str = _REQUEST_ID, key: ApiKey = Depends(require_scope(Scope.READ_COHORTS))
) -> Response:
    job = await run_in_threadpool(_job_or_404, request, request_id, key)
    if job["async_status"] != downloads.COMPLETED:
        raise ApiError(409, {
            "error": f"The file is not ready: {job['async_status']}"
                     + (f" ({job['error']})" if job.get("error") else "; poll the request status"),
            "async_status": job["async_status"],
            "parameter": "request_id",
        })
    path = _jobs(request).file(job)
    if path is None:
        raise not_found("The file is gone (files are kept for a day); request the download again")
    filename = f"cohort_{job['cohort_id']}_{job['request_id'][:8]}.{job['format']}"
    return FileResponse(path, media_type=downloads.media_type(job["format"]), filename=filename,
                        headers=downloads.snapshot_headers(job["snapshot"]))


# --- uploads --------------------------------------------------------------------------------------


def _checked(ids: list[Any], snapshot: Snapshot) -> tuple[uploads.CheckedIds, int]:
    checked = uploads.check_ids(ids)
    db = snapshot.connect()
    try:
        matched = uploads.count_known(db, checked.valid)
    finally:
        db.close()
    return checked, matched


def _accept_upload(request: Request, upload: CohortUpload, snapshot: Snapshot, key: ApiKey) -> dict[str, Any]:
    settings = request.app.state.settings
    checked, matched = _checked(upload.ids, snapshot)
    if not checked.valid:
        raise ApiError(400, {
            "error": f"ids: none of the {checked.received:,} ids is valid",
            "parameter": "ids", "invalid": checked.invalid, "invalid_sample": checked.invalid_sample,
        })
    name = upload.name.strip()
    cohort = {"name": name, "description": (upload.description or "").strip() or None,
              "owner": (upload.owner or "").strip() or key.name, "id_type": upload.id_type}
    if upload.existing_cohort_id:
        cohort_id, operation = upload.existing_cohort_id, "replace"
    else:
        cohort_id, operation = uploads.new_cohort_id(name, _taken_ids(snapshot)), "create"
    uploads.land_change(settings.landing_dir, cohort_id=cohort_id, changes=[(operation, checked.valid)],
                        requested_by=key.name, cohort=cohort)
    return {
        "cohort_id": cohort_id,
        "name": name,
        "received": checked.received,
        "matched": matched,
        "unmatched": len(checked.valid) - matched,
        "invalid": checked.invalid,
        "duplicates": checked.duplicates,
        "invalid_sample": checked.invalid_sample,
        "replaced": operation == "replace",
        "applied": _APPLIED,
        "freshness": snapshot.freshness(),
    }


def _taken_ids(snapshot: Snapshot) -> set[str]:
    db = snapshot.connect()
    try:
        return {r[0] for r in db.execute("select cohort_id from cohorts")}
    finally:
        db.close()


@router.post(
    "/api/3/cohorts/upload",
    response_model=UploadAnswer,
    openapi_extra=_body(CohortUpload),
    responses=_errors(404, 409, 413),
    summary="Upload a cohort from a list of user ids (a new cohort, or replace an uploaded one's members)",
)
async def upload_cohort(request: Request, key: ApiKey = Depends(require_scope(Scope.WRITE_COHORTS))) -> Response:
    settings = request.app.state.settings
    upload: CohortUpload = _parse(CohortUpload, await _read_json(request, settings.max_request_bytes))
    for field, value, multiline in (("name", upload.name, False), ("owner", upload.owner, False),
                                    ("description", upload.description, True)):
        problem = uploads.text_problem(value, multiline=multiline) if value is not None else None
        if problem:
            raise bad_request(field, problem)
    _refuse_amp_ids(upload.id_type, "id_type")
    if not upload.ids:
        raise bad_request("ids", "give at least one id")
    if len(upload.ids) > settings.max_upload_ids:
        raise ApiError(413, {"code": 413, "error": f"ids: at most {settings.max_upload_ids:,} ids per upload, got {len(upload.ids):,}",
                             "parameter": "ids"})
    snapshot: Snapshot = request.app.state.snapshots.current()
    if upload.existing_cohort_id is not None:
        _uploaded_cohort(request, snapshot, upload.existing_cohort_id, "existing_cohort_id")
    answer = await run_in_threadpool(_accept_upload, request, upload, snapshot, key)
    return _json(answer, snapshot.headers)


def _accept_membership(request: Request, update: MembershipUpdate, snapshot: Snapshot, key: ApiKey) -> dict[str, Any]:
    results = []
    changes: list[tuple[str, list[str]]] = []
    db = snapshot.connect()
    try:
        for position, membership in enumerate(update.memberships):
            checked = uploads.check_ids(membership.ids)
            if checked.invalid and not update.skip_invalid_ids:
                raise ApiError(400, {
                    "error": f"memberships.{position}.ids: {checked.invalid:,} invalid id(s) and skip_invalid_ids is false; nothing was changed",
                    "parameter": f"memberships.{position}.ids", "invalid": checked.invalid, "invalid_sample": checked.invalid_sample,
                })
            matched = uploads.count_known(db, checked.valid)
            results.append({
                "operation": membership.operation, "id_type": membership.id_type, "received": checked.received,
                "accepted": len(checked.valid), "matched": matched, "unmatched": len(checked.valid) - matched,
                "invalid": checked.invalid, "duplicates": checked.duplicates,
                "skipped_ids": [sample["id"] for sample in checked.invalid_sample], "invalid_sample": checked.invalid_sample,
            })
            if checked.valid:
                changes.append((membership.operation.lower(), checked.valid))
    finally:
        db.close()
    if not changes:
        raise ApiError(400, {"error": "memberships: no valid id in any membership; nothing was changed",
                             "parameter": "memberships", "memberships_result": results})
    uploads.land_change(request.app.state.settings.landing_dir, cohort_id=update.cohort_id, changes=changes,
                        requested_by=key.name)
    return {"cohort_id": update.cohort_id, "memberships_result": results, "applied": _APPLIED,
            "freshness": snapshot.freshness()}


@router.post(
    "/api/3/cohorts/membership",
    response_model=MembershipAnswer,
    openapi_extra=_body(MembershipUpdate),
    responses=_errors(404, 409, 413),
    summary="Add / remove members of an uploaded cohort (applied in the order given)",
)
async def update_membership(request: Request, key: ApiKey = Depends(require_scope(Scope.WRITE_COHORTS))) -> Response:
    settings = request.app.state.settings
    update: MembershipUpdate = _parse(MembershipUpdate, await _read_json(request, settings.max_request_bytes))
    for position, membership in enumerate(update.memberships):
        _refuse_amp_ids(membership.id_type, f"memberships.{position}.id_type")
    total = sum(len(m.ids) for m in update.memberships)
    if total > settings.max_upload_ids:
        raise ApiError(413, {"code": 413, "error": f"memberships: at most {settings.max_upload_ids:,} ids per request, got {total:,}",
                             "parameter": "memberships"})
    snapshot: Snapshot = request.app.state.snapshots.current()
    _uploaded_cohort(request, snapshot, update.cohort_id, "cohort_id")
    answer = await run_in_threadpool(_accept_membership, request, update, snapshot, key)
    return _json(answer, snapshot.headers)
