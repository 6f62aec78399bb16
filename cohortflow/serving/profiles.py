"""The Profile API: ``GET /v1/userprofile`` in Amplitude's shape.

One user's attributes (``amp_props``), computed properties (``computations``), cohort ids,
recommendations and propensities, read from one serving snapshot. Only what is asked for is looked
up; what is not asked for is ``null``, as in Amplitude's answers.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal, Optional

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from cohortflow.declarations import did_you_mean
from cohortflow.serving.auth import ApiKey, Scope, require_scope
from cohortflow.serving.errors import ApiError, bad_request, not_found
from cohortflow.serving.schemas import Freshness
from cohortflow.serving.snapshot import Snapshot

router = APIRouter(tags=["Profile API"])
MAX_ID_LENGTH = 255
MAX_LIST_IDS = 20


class Recommendation(BaseModel):
    rec_id: str
    items: list[str]
    is_control: bool = Field(description="True when this user is in the recommendation's control group (random items).")
    recommendation_source: Optional[str] = None
    model_version: Optional[str] = None
    last_updated: int = Field(description="When the list was made, seconds since the epoch (UTC).")


class Propensity(BaseModel):
    prop: float = Field(description="The calibrated probability (score) or the percentile (pct, 0-99).")
    pred_id: str
    prop_type: Literal["score", "pct"]
    model_version: str
    data_as_of: str


class UserData(BaseModel):
    user_id: str
    device_id: Optional[str] = None
    amp_props: Optional[dict[str, Any]] = None
    computations: Optional[dict[str, Any]] = None
    cohort_ids: Optional[list[str]] = None
    recommendations: Optional[list[Recommendation]] = None
    propensities: Optional[list[Propensity]] = None


class ProfileAnswer(BaseModel):
    userData: UserData
    freshness: Freshness


def _split_ids(parameter: str, value: str | None) -> list[str]:
    ids = [part.strip() for part in (value or "").split(",") if part.strip()]
    if not ids:
        raise bad_request(parameter, "give at least one id (several: comma-separated)")
    if len(ids) > MAX_LIST_IDS:
        raise bad_request(parameter, f"at most {MAX_LIST_IDS} ids")
    return list(dict.fromkeys(ids))


def _check_known(parameter: str, ids: list[str], known: frozenset[str], what: str) -> None:
    for value in ids:
        if value not in known:
            listed = ", ".join(sorted(known)) or "none published yet"
            raise bad_request(parameter, f"no {what} {value!r}{did_you_mean(value, sorted(known))} (known: {listed})")


def _epoch(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


def _user_id(snapshot: Snapshot, user_id: str | None, device_id: str | None) -> tuple[str, str | None]:
    if user_id is not None and device_id is not None:
        raise bad_request("user_id", "give user_id or device_id, not both")
    if user_id is None and device_id is None:
        raise bad_request("user_id", "give user_id or device_id")
    if user_id is not None:
        return user_id, None
    row = snapshot.db.execute("select user_id from devices where device_id = ?", (device_id,)).fetchone()
    # A device never seen signed in is its own user (user_id = device_id).
    return (row[0] if row else device_id), device_id


@router.get(
    "/v1/userprofile",
    response_model=ProfileAnswer,
    summary="One user's profile: attributes, computed properties, cohorts, recommendations, propensities",
)
async def user_profile(
    request: Request,
    user_id: Optional[str] = Query(default=None, min_length=1, max_length=MAX_ID_LENGTH, description="The user id."),
    device_id: Optional[str] = Query(default=None, min_length=1, max_length=MAX_ID_LENGTH,
                                     description="A device id (instead of user_id): its latest signed-in user."),
    get_amp_props: bool = Query(default=False, description="Return the user's attributes (amp_props)."),
    get_computations: bool = Query(default=False, description="Return the computed properties."),
    get_cohort_ids: bool = Query(default=False, description="Return the ids of the cohorts the user is in now."),
    get_recs: bool = Query(default=False, description="Return recommendations (needs rec_id)."),
    rec_id: Optional[str] = Query(default=None, max_length=2000, description="Recommendation ids, comma-separated."),
    get_propensity: bool = Query(default=False, description="Return propensities (needs prediction_id)."),
    prediction_id: Optional[str] = Query(default=None, max_length=2000, description="Prediction ids, comma-separated."),
    propensity_type: Literal["score", "pct"] = Query(default="score",
                                                      description="score: calibrated probability; pct: percentile 0-99."),
    key: ApiKey = Depends(require_scope(Scope.READ_PROFILES)),
) -> Response:
    snapshot: Snapshot = request.app.state.snapshots.current()
    rec_ids = _split_ids("rec_id", rec_id) if get_recs else []
    prediction_ids = _split_ids("prediction_id", prediction_id) if get_propensity else []
    _check_known("rec_id", rec_ids, snapshot.recommendations, "recommendation")
    _check_known("prediction_id", prediction_ids, snapshot.predictions, "prediction")

    db = snapshot.db
    user, device = _user_id(snapshot, user_id, device_id)
    row = db.execute("select amp_props, computations, cohort_ids from users where user_id = ?", (user,)).fetchone()
    if row is None:
        raise not_found("User not found" if device is None else "Device not found")
    data: dict[str, Any] = {
        "user_id": user,
        "device_id": device,
        "amp_props": orjson.loads(row[0]) if get_amp_props else None,
        "computations": orjson.loads(row[1]) if get_computations else None,
        "cohort_ids": orjson.loads(row[2]) if get_cohort_ids else None,
        "recommendations": None,
        "propensities": None,
    }
    if get_recs:
        lists = []
        for rid in rec_ids:
            found = db.execute(
                "select items, is_control, source, model_version, last_updated from recommendations "
                "where user_id = ? and rec_id = ?",
                (user, rid),
            ).fetchone()
            if found is not None:
                lists.append({
                    "rec_id": rid, "items": orjson.loads(found[0]), "is_control": bool(found[1]),
                    "recommendation_source": found[2], "model_version": found[3], "last_updated": _epoch(found[4]),
                })
        data["recommendations"] = lists
    if get_propensity:
        scores = []
        for pid in prediction_ids:
            found = db.execute(
                "select probability, percentile, model_version, as_of from propensities where user_id = ? and prediction_id = ?",
                (user, pid),
            ).fetchone()
            if found is not None:
                scores.append({
                    "prop": found[0] if propensity_type == "score" else found[1],
                    "pred_id": pid, "prop_type": propensity_type, "model_version": found[2], "data_as_of": found[3] + "Z",
                })
        data["propensities"] = scores
    body = orjson.dumps({"userData": data, "freshness": snapshot.freshness()})
    return Response(body, media_type="application/json", headers=snapshot.headers)
