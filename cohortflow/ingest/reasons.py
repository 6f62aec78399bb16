"""Why a row was rejected: every reason code ingest can write, in one place.

``raw.rejected_events.reason`` holds one of these codes; ``detail`` names the field
and the bad value; ``payload`` keeps the original line / record untouched. The
documentation (docs/ingest.md) and the tests are written against this table.
"""

from __future__ import annotations

from typing import Final

#: Reason code -> one-line description, in the order the checks run (a row gets
#: the first reason that applies).
REASONS: Final[dict[str, str]] = {
    "invalid_json": "The line is not valid JSON (or not valid UTF-8).",
    "not_an_object": "Valid JSON, but not an object (an event, identify or request body must be a JSON object).",
    "malformed_row": "CSV row with the wrong number of fields, broken quoting (a quote that never closes, "
                     "text after a closing quote) or invalid UTF-8.",
    "field_too_large": "A CSV value, a JSON line, or an event of a one-document file is larger than the "
                       "field-size limit (--max-field-bytes, default 1 MiB). A JSON line above it is not parsed.",
    "missing_column": "The CSV lacks a column the mapping refers to; every row of that file gets this reason.",
    "properties_not_object": "event_properties / user_properties is present, not null and not a JSON object.",
    "invalid_type": "An id or event_type has the wrong JSON type (an array, object or boolean; "
                    "event_type a number; an id a decimal number such as 1.5 or 1e3).",
    "invalid_id": "An id (user_id, device_id, insert_id, item_id, CustomerID, ...) or event_type contains a "
                  "NUL character.",
    "missing_event_type": "No event_type (missing, null or empty).",
    "missing_user_and_device_id": "Neither user_id nor device_id is present (Amplitude needs one of them).",
    "id_too_short": "user_id or device_id is present but shorter than 5 characters (Amplitude's minimum).",
    "missing_user_id": "A user row without user_id.",
    "missing_item_id": "An item row without item_id.",
    "invalid_time": "The event / update time is missing or cannot be parsed.",
    "future_time": "The time is more than 24 hours after the ingest clock.",
    "too_old": "The time is before 2000-01-01.",
    "invalid_number": "A number field (price, quantity, revenue, session_id, ...) is not a finite number "
                      "(session_id: not a whole number).",
    "invalid_boolean": "A boolean field (is_* / has_*) is not one of true/false/1/0/yes/no.",
    "missing_customer_id": "Online Retail line without a CustomerID (guest checkout); checked last, so that "
                           "such a line still counts for the item catalogue.",
}

#: Accepted-time window: Amplitude drops events from the far future; we allow clock skew of a day.
FUTURE_TOLERANCE_HOURS: Final[int] = 24
#: Anything before this is almost certainly a unit mistake (seconds read as milliseconds, 1970 defaults).
OLDEST_ACCEPTED: Final[str] = "2000-01-01"
#: Amplitude rejects user_id / device_id shorter than this.
MIN_ID_LENGTH: Final[int] = 5
#: Default size limit of one value (CSV cell, JSON line, event of a JSON document), in bytes of UTF-8.
#: Amplitude's HTTP V2 API refuses requests above 1 MB; no real value comes near it, and a larger
#: one is almost always a broken export (a quote that swallowed the rest of the file, a blob).
DEFAULT_MAX_FIELD_BYTES: Final[int] = 1024 * 1024
#: A rejected row whose payload is above the limit keeps only this many characters of it (and says so).
TRUNCATED_PAYLOAD_CHARS: Final[int] = 4096


def describe(reason: str) -> str:
    """Return the one-line description of a reason code.

    Parameters
    ----------
    reason : str
        A code from :data:`REASONS`.

    Returns
    -------
    str
        Its description.

    Raises
    ------
    KeyError
        If the code is unknown.
    """
    return REASONS[reason]
