"""The event endpoint: ``POST /2/httpapi``, compatible with Amplitude's HTTP V2 API.

A request is ``{"api_key": ..., "events": [...], "options": {...}}`` (the key may come in the
``Authorization`` header instead). Every event is checked with the rules ``cohortflow ingest --format
amplitude`` applies (:mod:`cohortflow.ingest.sql`), with its reason codes and wording; when one event
fails, nothing is accepted and the 400 lists the failing events by index, as Amplitude does, so the
client can drop them and send the rest again. An accepted request is landed as one file
(:func:`cohortflow.ingest.landing.write_landed`) and answered 200 only once that file is durable; the
next pipeline run (or the every-minute schedule) ingests it. The API never opens the warehouse file.

Checks run in one tight loop over the parsed events (orjson), not through per-event objects: a
2,000-event request is parsed, checked and serialised in a few milliseconds.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Optional

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cohortflow.ingest.landing import new_landed_name, write_landed
from cohortflow.ingest.reasons import (DEFAULT_MAX_FIELD_BYTES, FUTURE_TOLERANCE_HOURS, MIN_ID_LENGTH,
                                       OLDEST_ACCEPTED)
from cohortflow.serving.auth import Scope, authenticate
from cohortflow.serving.errors import ApiError

router = APIRouter(tags=["Events"])

#: Amplitude's HTTP V2 limit: more events in one request is a 413 (clients split the batch).
MAX_EVENTS: Final[int] = 2000
#: Request body limit (after gzip decompression), as Amplitude's "keep request sizes under 1 MB".
MAX_PAYLOAD_BYTES: Final[int] = 1024 * 1024
#: A 400 details at most this many events in ``event_errors`` (the index lists are always complete).
MAX_LISTED_ERRORS: Final[int] = 100
# An event can never exceed the field limit of ingest (each event is one landed line).
assert MAX_PAYLOAD_BYTES <= DEFAULT_MAX_FIELD_BYTES

MISSING, INVALID = "missing", "invalid"

# DuckDB's trim() removes the Unicode space separators (Zs), not tabs or newlines; its number casts
# also skip ASCII white space. The checks below trim the same way so that the same values pass.
_ZS = " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
_ASCII_WS = " \t\n\v\f\r"
# sql.time_expr's epoch-milliseconds pattern (RE2's \s is [\t\n\f\r ]).
_EPOCH_MS = re.compile(r"[\t\n\f\r ]*-?[0-9]{1,15}(?:\.[0-9]*)?[\t\n\f\r ]*")
_NUMBER_CHARS = re.compile(r"[0-9+\-.eE_]+")
_WHOLE = re.compile(r"[+-]?[0-9]{1,18}")
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{0,9}))?)?"
    r"(Z|UTC|[+-][0-9]{2}(?::?[0-9]{2})?)?)?")
_EPOCH = datetime(1970, 1, 1)
_OLDEST_US: Final[int] = int((datetime.fromisoformat(OLDEST_ACCEPTED) - _EPOCH) / timedelta(microseconds=1))
_TOLERANCE_US: Final[int] = FUTURE_TOLERANCE_HOURS * 3600 * 1_000_000
_BIGINT = 2**63
_NUMBER_FIELDS = ("price", "quantity", "revenue")
_PROPERTY_NUMBER_LABELS = tuple((name, f"event_properties.{name}") for name in _NUMBER_FIELDS)
_UTF8_BOM = b"\xef\xbb\xbf"
_TIME_WORDS = "is not a time (epoch ms, ISO-8601 or the mapping's time_format)"


# --- answers --------------------------------------------------------------------------------------


class UploadAnswer(BaseModel):
    """Amplitude's 200 answer."""

    code: int = Field(200, description="Always 200.")
    events_ingested: int = Field(description="Events accepted (all of the request's; each is ingested once by insert_id).")
    payload_size_bytes: int = Field(description="Size of the request body in bytes (after gzip decompression).")
    server_upload_time: int = Field(description="When the server received the request, ms since the epoch.")


class EventError(BaseModel):
    index: int = Field(description="0-based index of the event in the request's events.")
    field: str = Field(description="The first field at fault (as `cohortflow ingest` names it).")
    reason: str = Field(description="The reason code `cohortflow ingest` would give (docs/ingest.md).")
    detail: str = Field(description="What is wrong, in the words of `cohortflow ingest`.")


class UploadRejected(BaseModel):
    """Amplitude's 400 answer: nothing of the request was accepted."""

    code: int = 400
    error: str
    missing_field: Optional[str] = Field(None, description="A missing request field (api_key, events).")
    events_with_invalid_fields: dict[str, list[int]] = Field(default_factory=dict,
                                                             description="Field -> indexes of the events where it is invalid.")
    events_with_missing_fields: dict[str, list[int]] = Field(default_factory=dict,
                                                             description="Field -> indexes of the events that lack it.")
    event_errors: list[EventError] = Field(default_factory=list,
                                           description=f"The first {MAX_LISTED_ERRORS} failing events, with the reason.")


class TooLarge(BaseModel):
    code: int = 413
    error: str


_EVENT_SCHEMA = {
    "type": "object",
    "description": "An Amplitude event; fields other than these are kept as sent.",
    "properties": {
        "user_id": {"type": ["string", "integer"], "description": "Required unless device_id is given; at least 5 characters."},
        "device_id": {"type": ["string", "integer"], "description": "Required unless user_id is given; at least 5 characters."},
        "event_type": {"type": "string", "minLength": 1},
        "time": {"type": ["integer", "number", "string"],
                 "description": "Milliseconds since the epoch (or ISO-8601); default: when the server receives the request."},
        "insert_id": {"type": ["string", "integer"], "description": "Deduplication key: an event repeating one is ingested once."},
        "session_id": {"type": ["integer", "string"]},
        "event_properties": {"type": "object"},
        "user_properties": {"type": "object"},
        "price": {"type": ["number", "string"]},
        "quantity": {"type": ["number", "string"]},
        "revenue": {"type": ["number", "string"]},
        "productId": {"type": ["string", "integer"]},
    },
}
_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "api_key": {"type": "string", "description": "An API key with the scope write:events (or send the Authorization header)."},
        "events": {"type": "array", "minItems": 1, "maxItems": MAX_EVENTS, "items": _EVENT_SCHEMA},
        "options": {"type": "object", "properties": {"min_id_length": {"type": "integer", "minimum": 1}}},
    },
}


def _upload_error(error: str, *, missing_field: str | None = None) -> ApiError:
    return ApiError(400, {"code": 400, "error": error, "missing_field": missing_field,
                          "events_with_invalid_fields": {}, "events_with_missing_fields": {}})


def too_large(error: str) -> ApiError:
    """Amplitude's 413 (clients split the batch and send the halves)."""
    return ApiError(413, {"code": 413, "error": error})


# --- the rules of cohortflow ingest, per event ---------------------------------------------------


def _text(value: Any) -> str:
    """A value as the ingest SQL sees it: a string as is, anything else as its JSON text."""
    return value if type(value) is str else orjson.dumps(value).decode()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _shown(text: str | None, width: int = 80) -> str:
    """A value in a detail, as sql.shown writes it: quoted, cut, NUL as \\u0000."""
    if text is None:
        return "null"
    cut = text[:width] + "…" if len(text) > width else text
    return "'" + cut.replace("\x00", "\\u0000") + "'"


def _kind(value: Any) -> str:
    """A JSON value's type in words (sql.type_words)."""
    t = type(value)
    if t is str:
        return "a string"
    if t is list:
        return "an array"
    if t is bool:
        return "a boolean"
    if t is dict:
        return "an object"
    if value is None:
        return "null"
    if t is float:
        return "a decimal number"
    return "a number"


def _number_text_ok(text: str) -> bool:
    """sql.number_ok on text: a finite number after trimming."""
    core = text.strip(_ZS).strip(_ASCII_WS)
    if not _NUMBER_CHARS.fullmatch(core):
        return False
    try:
        return math.isfinite(float(core))
    except ValueError:
        return False


def _number_ok(value: Any) -> bool:
    t = type(value)
    return t is int or t is float or (t is str and _number_text_ok(value))


def _whole_ok(value: Any) -> bool:
    """sql.integer_value is not null: a whole number that fits a BIGINT."""
    t = type(value)
    if t is int:
        return -_BIGINT <= value < _BIGINT
    if t is float:
        return value.is_integer() and -_BIGINT <= value < _BIGINT
    if t is str:
        core = value.strip(_ZS)
        if _WHOLE.fullmatch(core):
            return True
        if _number_text_ok(core):
            number = float(core.strip(_ASCII_WS))
            return number.is_integer() and -_BIGINT <= number < _BIGINT
    return False


def _iso_micros(text: str) -> int | None:
    """Microseconds since the epoch of an ISO-8601 time (UTC unless it has an offset), else None."""
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                          int((fraction or "0")[:6].ljust(6, "0")))
    except ValueError:
        return None
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    if offset and offset not in ("Z", "UTC"):
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:4] or 0)
        micros -= sign * minutes * 60_000_000
    return micros


_CYCLE_US = 146_097 * 86_400 * 1_000_000  # 400 Gregorian years


def _when(micros: int) -> str:
    """'YYYY-MM-DD HH:MM:SS' of an instant, also past year 9999 (shifted by whole 400-year cycles)."""
    cycles = 0
    while micros >= 7000 * 365 * 86_400 * 1_000_000:
        micros -= _CYCLE_US
        cycles += 1
    while micros < -1900 * 365 * 86_400 * 1_000_000:
        micros += _CYCLE_US
        cycles -= 1
    moment = _EPOCH + timedelta(microseconds=micros)
    return f"{moment.year + 400 * cycles:04d}-{moment:%m-%d %H:%M:%S}"


Problem = tuple[str, str, str, str]  # (field, missing | invalid, reason, detail)


def _id_value(value: Any, label: str, expected: str, name_only: bool, found: list[Problem]) -> str | None:
    """Type and NUL checks of an id / event_type (sql.field_checks); return its text when usable."""
    t = type(value)
    if t is str:
        if "\x00" in value:
            found.append((label, INVALID, "invalid_id", f"{label} {_shown(value)} contains a NUL character"))
            return None
        return value
    if t is int and not name_only:
        return str(value)
    found.append((label, INVALID, "invalid_type", f"{label} is {_kind(value)}, expected {expected}: {_shown(_text(value))}"))
    return None


def _given(value: Any, text: str | None) -> str | None:
    """An id as the id rules see it: None when absent or blank, its trimmed text when usable, and ""
    (given, length not checked) when it already failed its type or NUL check."""
    if value is None:
        return None
    if text is None:
        return ""
    return text.strip(_ZS) or None


def _check_event(event: dict[str, Any], now_ms: int, now_text: str, min_id_length: int) -> list[Problem]:
    """The ingest checks of one event, in ingest's order (the first is its reason there).

    Fills a missing ``time`` with ``now_ms`` and writes a time given as text as epoch milliseconds,
    so that the landed event ingests at the instant checked here.
    """
    found: list[Problem] = []
    get = event.get
    props, user_props = get("event_properties"), get("user_properties")
    if props is not None and type(props) is not dict:
        found.append(("event_properties", INVALID, "properties_not_object",
                      f"event_properties is {_kind(props)}, expected an object: {_shown(_json(props))}"))
    if user_props is not None and type(user_props) is not dict:
        found.append(("user_properties", INVALID, "properties_not_object",
                      f"user_properties is {_kind(user_props)}, expected an object: {_shown(_json(user_props))}"))

    event_type = get("event_type")
    if event_type is not None:
        event_type = _id_value(event_type, "event_type", "a string", True, found)
    user = get("user_id")
    user_text = user if user is None else _id_value(user, "user_id", "a string or an integer", False, found)
    device = get("device_id")
    device_text = device if device is None else _id_value(device, "device_id", "a string or an integer", False, found)
    insert_id = get("$insert_id")
    if insert_id is None:
        insert_id = get("insert_id")
    if insert_id is not None:
        _id_value(insert_id, "insert_id", "a string or an integer", False, found)
    product = get("productId")
    if product is not None:
        _id_value(product, "productId", "a string or an integer", False, found)
    if type(props) is dict:
        for key in ("item_id", "order_id"):
            value = props.get(key)
            if value is not None:
                _id_value(value, f"event_properties.{key}", "a string or an integer", False, found)

    if get("event_type") is None or (type(event_type) is str and not event_type.strip(_ZS)):
        found.append(("event_type", MISSING, "missing_event_type", "event_type is missing or empty"))
    user_id, device_id = _given(user, user_text), _given(device, device_text)
    if user_id is None and device_id is None:
        found.append(("user_id", MISSING, "missing_user_and_device_id", "user_id and device_id are both missing or empty"))
    if user_id and len(user_id) < min_id_length:
        found.append(("user_id", INVALID, "id_too_short",
                      f"user_id {_shown(user_id)} is shorter than {min_id_length} characters"))
    if device_id and len(device_id) < min_id_length:
        found.append(("device_id", INVALID, "id_too_short",
                      f"device_id {_shown(device_id)} is shorter than {min_id_length} characters"))

    _check_time(event, now_ms, now_text, found)

    for name in _NUMBER_FIELDS:
        value = get(name)
        if value is not None and not _number_ok(value):
            found.append((name, INVALID, "invalid_number", f"{name} {_shown(_text(value))} is not a number"))
    if type(props) is dict:
        for name, label in _PROPERTY_NUMBER_LABELS:
            value = props.get(name)
            if value is not None and not _number_ok(value):
                found.append((label, INVALID, "invalid_number", f"{label} {_shown(_text(value))} is not a number"))
    session = get("session_id")
    if session is not None and not _whole_ok(session):
        found.append(("session_id", INVALID, "invalid_number", f"session_id {_shown(_text(session))} is not a whole number"))
    return found


def _check_time(event: dict[str, Any], now_ms: int, now_text: str, found: list[Problem]) -> None:
    value = event.get("time")
    t = type(value)
    micros: int | None = None
    if t is int:
        if -10**15 < value < 10**15:
            micros = value * 1000
    elif t is float:
        if abs(value) < 1e15:
            micros = round(value * 1000)
    elif value is None or (t is str and not value.strip(_ZS)):
        # Amplitude: "If time isn't sent with the event, it's set to the request upload time."
        event["time"] = now_ms
        return
    elif t is str:
        text = value.strip(_ZS)
        if _EPOCH_MS.fullmatch(text):
            millis = float(text.strip(_ASCII_WS))
            micros = round(millis * 1000)
        else:
            micros = _iso_micros(text)
        if micros is not None:  # land the instant checked here, as a number
            event["time"] = micros // 1000 if micros % 1000 == 0 else micros / 1000
    if micros is None:
        raw = value.strip(_ZS) if t is str else _text(value)
        found.append(("time", INVALID, "invalid_time", f"time {_shown(raw)} {_TIME_WORDS}"))
    elif micros > now_ms * 1000 + _TOLERANCE_US:
        found.append(("time", INVALID, "future_time",
                      f"time {_when(micros)} UTC is more than {FUTURE_TOLERANCE_HOURS} h after the ingest clock "
                      f"({now_text} UTC)"))
    elif micros < _OLDEST_US:
        found.append(("time", INVALID, "too_old", f"time {_when(micros)} UTC is before {OLDEST_ACCEPTED}"))


@dataclass
class CheckedEvents:
    """The outcome of :func:`check_events`: the landed lines when every event passed, else the problems."""

    lines: list[bytes] = field(default_factory=list)
    #: (event index, field, missing | invalid, reason code, detail), in event order.
    problems: list[tuple[int, str, str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_events(events: list[Any], now_ms: int, *, min_id_length: int = MIN_ID_LENGTH) -> CheckedEvents:
    """Check every event with the rules of ``cohortflow ingest --format amplitude``; serialise them when all pass.

    Parameters
    ----------
    events : list
        The request's ``events``, as parsed (events are updated in place: a missing time is set to
        ``now_ms``, a time given as text is written as epoch milliseconds).
    now_ms : int
        The server's clock (ms since the epoch): the upload time and the reference of the future-time rule.
    min_id_length : int
        Minimum user_id / device_id length (never below ingest's 5).

    Returns
    -------
    CheckedEvents
    """
    result = CheckedEvents()
    now_text = f"{_EPOCH + timedelta(milliseconds=now_ms):%Y-%m-%d %H:%M:%S}"
    dumps = orjson.dumps
    for index, event in enumerate(events):
        if type(event) is not dict:
            result.problems.append((index, "event", INVALID, "not_an_object",
                                    f"expected a JSON object (an event), got {_shown(_text(event))}"))
            continue
        found = _check_event(event, now_ms, now_text, min_id_length)
        if found:
            result.problems.extend((index, *problem) for problem in found)
            continue
        if result.problems:
            continue  # nothing will be landed: no need to serialise
        # A top-level "events" / "identification" would make ingest read the line as a request body.
        if "events" in event:
            del event["events"]
        if "identification" in event:
            del event["identification"]
        line = dumps(event)
        if len(line) > DEFAULT_MAX_FIELD_BYTES:
            result.problems.append((index, "event", INVALID, "field_too_large",
                                    f"event is {len(line):,} bytes, above the limit of {DEFAULT_MAX_FIELD_BYTES:,} bytes "
                                    "(max_field_bytes, --max-field-bytes)"))
            continue
        result.lines.append(line)
    return result


def rejected_answer(checked: CheckedEvents, n_events: int) -> ApiError:
    """Amplitude's 400 for events that fail: every failing event listed by index under its fields."""
    invalid: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    first: dict[int, tuple[str, str, str]] = {}
    for index, name, kind, reason, detail in checked.problems:
        indexes = (missing if kind == MISSING else invalid).setdefault(name, [])
        if not indexes or indexes[-1] != index:
            indexes.append(index)
        first.setdefault(index, (name, reason, detail))
    failing = sorted(first)
    body = {
        "code": 400,
        "error": (f"{len(failing):,} of {n_events:,} events have invalid or missing fields; none of the request was "
                  "accepted: drop the listed events and send the rest again"),
        "missing_field": None,
        "events_with_invalid_fields": invalid,
        "events_with_missing_fields": missing,
        "event_errors": [{"index": i, "field": first[i][0], "reason": first[i][1], "detail": first[i][2]}
                         for i in failing[:MAX_LISTED_ERRORS]],
    }
    return ApiError(400, body)


# --- the request ---------------------------------------------------------------------------------


def parse_body(raw: bytes, content_encoding: str | None = None, *, limit: int = MAX_PAYLOAD_BYTES) -> tuple[dict[str, Any], int]:
    """The request's JSON object and its size in bytes (decompressed); ApiError 400 / 413 / 415 otherwise."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error:
            raise _upload_error("Content-Encoding is gzip but the body is not valid gzip data") from None
        if len(raw) > limit or inflater.unconsumed_tail:
            raise too_large(f"Payload too large: the body is above {limit:,} bytes once decompressed; split the events")
    elif encoding != "identity":
        raise ApiError(415, {"code": 415, "error": f"Unsupported Content-Encoding {encoding[:40]!r}: send gzip or none"})
    size = len(raw)
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
    if not raw.strip():
        raise _upload_error('Empty request body: expected a JSON object {"api_key": ..., "events": [...]}')
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _upload_error(f"Invalid JSON request body: {str(exc)[:200]}") from None
    if type(payload) is not dict:
        raise _upload_error(f'The request body is {_kind(payload)}; expected a JSON object {{"api_key": ..., "events": [...]}}')
    return payload, size


def events_of(payload: dict[str, Any]) -> tuple[list[Any], int]:
    """The request's events and the minimum id length its options ask for; ApiError 400 / 413 otherwise."""
    events = payload.get("events")
    if events is None:
        raise _upload_error("Request missing required field: events", missing_field="events")
    if type(events) is not list:
        raise _upload_error(f"events is {_kind(events)}; expected a JSON array of events")
    if not events:
        raise _upload_error("events is empty: send at least one event", missing_field="events")
    if len(events) > MAX_EVENTS:
        raise too_large(f"Payload too large: at most {MAX_EVENTS:,} events a request, this one has {len(events):,}; "
                        "split the events")
    min_id_length = MIN_ID_LENGTH
    options = payload.get("options")
    if options is not None:
        if type(options) is not dict:
            raise _upload_error(f"options is {_kind(options)}; expected an object")
        asked = options.get("min_id_length")
        if asked is not None:
            if type(asked) is not int or asked < 1:
                raise _upload_error(f"options.min_id_length {_shown(_text(asked))} is not a whole number of at least 1")
            # Shorter ids than ingest accepts cannot be honoured; longer ones can.
            min_id_length = max(MIN_ID_LENGTH, asked)
    return events, min_id_length


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(f"Payload too large: at most {limit:,} bytes a request; split the events")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"Payload too large: at most {limit:,} bytes a request; split the events")
        chunks.append(chunk)
    return b"".join(chunks)


def _accept(events: list[Any], now_ms: int, min_id_length: int, landing_dir: Any, key_name: str) -> int:
    """Check, then land durably (in a worker thread: the fsyncs must not hold up the event loop)."""
    checked = check_events(events, now_ms, min_id_length=min_id_length)
    if not checked.ok:
        raise rejected_answer(checked, len(events))
    name = new_landed_name()
    write_landed(landing_dir, checked.lines,
                 {"id": name.rsplit(".", 1)[0], "received_at": now_ms, "api_key_name": key_name,
                  "event_count": len(checked.lines)},
                 name=name)
    return len(checked.lines)


@router.post(
    "/2/httpapi",
    summary="Upload events (Amplitude HTTP V2 compatible)",
    response_model=UploadAnswer,
    responses={
        400: {"model": UploadRejected, "description": "Invalid request or events; nothing was accepted."},
        413: {"model": TooLarge, "description": f"More than {MAX_EVENTS:,} events or {MAX_PAYLOAD_BYTES:,} bytes."},
        415: {"model": TooLarge, "description": "A Content-Encoding other than gzip."},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _REQUEST_SCHEMA}}}},
)
async def upload_events(request: Request) -> Response:
    """Accept up to 2,000 events; answer 200 only once they are durably landed for the next pipeline run.

    The API key comes in the body (``api_key``, as Amplitude's SDKs send it) or in the
    ``Authorization: Api-Key <key>`` header, and needs the scope ``write:events``.
    """
    received_ms = time.time_ns() // 1_000_000
    raw = await _read_body(request, MAX_PAYLOAD_BYTES)
    payload, size = await run_in_threadpool(parse_body, raw, request.headers.get("content-encoding"))
    api_key = payload.get("api_key")
    if api_key is not None and type(api_key) is not str:
        raise _upload_error(f"api_key is {_kind(api_key)}; expected a string")
    if not api_key and not request.headers.get("authorization"):
        raise _upload_error("Request missing required field: api_key", missing_field="api_key")
    key = authenticate(request, api_key or None, Scope.WRITE_EVENTS)
    events, min_id_length = events_of(payload)
    settings = request.app.state.settings
    accepted = await run_in_threadpool(_accept, events, received_ms, min_id_length, settings.landing_dir, key.name)
    body = {"code": 200, "events_ingested": accepted, "payload_size_bytes": size, "server_upload_time": received_ms}
    return Response(orjson.dumps(body), media_type="application/json")
