"""The ``as_of`` moment: every cohort, property and score is computed as of one instant.

One run resolves ``as_of`` once (default: now) and hands the same UTC timestamp to every
stage, so all models of a run see the same moment and a past moment can be replayed exactly.
"""

from __future__ import annotations

from datetime import datetime, timezone

AS_OF_FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_as_of(value: str | datetime | None, *, now: datetime | None = None) -> datetime:
    """Resolve an ``as_of`` value to a naive UTC ``datetime`` (second precision).

    Parameters
    ----------
    value
        ``None`` or ``"now"`` for the current time; a ``datetime`` (naive = UTC); or a string:
        ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]``, ISO-8601 with ``T``, ``Z`` or an offset.
    now
        The clock to use for ``None`` / ``"now"`` (tests pass a fixed one).

    Raises
    ------
    ValueError
        When the string is not a timestamp; the message names ``as_of`` and the value.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "now")):
        moment = now or datetime.now(timezone.utc)
    elif isinstance(value, datetime):
        moment = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"as_of: {value!r} is not a timestamp; use YYYY-MM-DD, 'YYYY-MM-DD HH:MM:SS' "
                "or ISO-8601 such as 2011-12-09T12:50:00Z"
            ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=0)


def format_as_of(moment: datetime) -> str:
    """The canonical text form passed to dbt (``--vars {as_of: ...}``): UTC, no zone."""
    return parse_as_of(moment).strftime(AS_OF_FORMAT)
