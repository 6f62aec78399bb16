"""Small SQL builders shared by the format readers (quoting, time parsing, checks).

Everything here returns DuckDB SQL text; values from files never reach this module
(they stay in DuckDB columns), only names from mappings and options, which are quoted.
:func:`field_checks` is the one definition of the type rules every format applies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from cohortflow.ingest.reasons import FUTURE_TOLERANCE_HOURS, MIN_ID_LENGTH, OLDEST_ACCEPTED, TRUNCATED_PAYLOAD_CHARS

# SQL string literals holding a backslash: DuckDB does not unescape '...' literals, so these are
# the characters RE2 / replace() see.
_NUL_ESCAPE = r"'\u0000'"                 # the six characters \u0000
_NUL_ESCAPE_RE = r"'\\u0000|(\\.)'"        # a \u0000 escape, or any other escape kept whole


def lit(value: str) -> str:
    """Quote ``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    """Quote ``name`` as a SQL identifier (CSV headers may hold spaces, quotes, anything)."""
    return '"' + name.replace('"', '""') + '"'


def ts_lit(moment: datetime) -> str:
    """A naive UTC ``datetime`` as a SQL timestamp literal."""
    return f"timestamp '{moment.isoformat(sep=' ')}'"


def shown(expr: str, width: int = 80) -> str:
    r"""SQL text showing a value in a rejection detail: quoted, cut to ``width`` characters.

    A NUL is shown as ``\u0000``: details are read in terminals and copied around.
    """
    q = "''''"
    return (f"coalesce({q} || replace(case when length({expr}) > {width} "
            f"then left({expr}, {width}) || '…' else {expr} end, chr(0), {_NUL_ESCAPE}) || {q}, 'null')")


def truncated(expr: str, size: str) -> str:
    """SQL: a payload cut to :data:`TRUNCATED_PAYLOAD_CHARS` characters, saying how large it was.

    Parameters
    ----------
    expr : str
        SQL text expression of the payload.
    size : str
        SQL integer expression: the original size in bytes, shown in the marker.

    Returns
    -------
    str
        SQL: ``expr`` itself when short enough, else its start and ``…[truncated: N bytes in total]``.
    """
    n = TRUNCATED_PAYLOAD_CHARS
    return (f"(case when length({expr}) > {n} then left({expr}, {n}) || '…[truncated: ' "
            f"|| format('{{:,}}', {size}) || ' bytes in total]' else {expr} end)")


def strip_nul(expr: str) -> str:
    """SQL: a text value without NUL characters (Postgres text cannot hold them; docs/ingest.md)."""
    return f"replace({expr}, chr(0), '')"


def json_may_hold_nul(expr: str) -> str:
    r"""SQL: can JSON text ``expr`` hold a NUL? In JSON a NUL is always the escape ``\u0000``."""
    return f"contains({expr}, {_NUL_ESCAPE})"


def strip_json_nul(expr: str) -> str:
    r"""SQL: JSON text with every ``\u0000`` escape (a NUL in a string or key) removed.

    Escapes are consumed whole, left to right, so the text ``\\u0000`` (an escaped backslash then
    ``u0000``) is not taken for a NUL. ``expr`` should be a plain column: it appears three times,
    and the regex only runs on the rare values holding the escape.
    """
    return (f"(case when {json_may_hold_nul(expr)} "
            f"then regexp_replace({expr}, {_NUL_ESCAPE_RE}, '\\1', 'g') else {expr} end)")


def blank_to_null(expr: str) -> str:
    """SQL: NULL for a missing or whitespace-only string, the trimmed string otherwise."""
    return f"nullif(trim({expr}), '')"


def local_to_utc(ts_expr: str, timezone: str) -> str:
    """SQL: a naive timestamp read in ``timezone`` as naive UTC (independent of the session zone)."""
    if timezone == "UTC":
        return ts_expr
    return f"timezone('UTC', timezone({lit(timezone)}, {ts_expr}))"


# A time part followed by an explicit offset ('...T10:00:00Z', '... 10:00+02:00'). A bare
# date's '-01' must not count as an offset, hence the required hh:mm before it.
_HAS_OFFSET = r"[0-9]:[0-9]{2}(:[0-9]{2}(\.[0-9]*)?)?\s*(Z|z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)\s*$"
_EPOCH_MS = r"\s*-?[0-9]{1,15}(\.[0-9]*)?\s*"


def time_expr(expr: str, *, time_format: str | None = None, timezone: str = "UTC") -> str:
    """SQL: parse a VARCHAR time into a naive UTC timestamp, NULL when it does not parse.

    Without ``time_format``: epoch milliseconds (all digits), ISO-8601 with an offset (converted
    to UTC), or ISO-8601 / 'YYYY-MM-DD HH:MM:SS[.ffffff]' without one (read in ``timezone``).
    With ``time_format``: that ``strptime`` format (``%z`` in it means the value carries its offset).
    """
    if time_format is not None:
        parsed = f"try_strptime(trim({expr}), {lit(time_format)})"
        if "%z" in time_format or "%Z" in time_format:
            return f"timezone('UTC', {parsed})"
        return local_to_utc(parsed, timezone)
    return (f"(case when regexp_full_match({expr}, '{_EPOCH_MS}') "
            f"then try(make_timestamp(cast(round(try_cast(trim({expr}) as double) * 1000) as bigint))) "
            f"when regexp_matches({expr}, '{_HAS_OFFSET}') "
            f"then timezone('UTC', try_cast(replace(trim({expr}), 'UTC', 'Z') as timestamptz)) "
            f"else {local_to_utc(f'try_cast(trim({expr}) as timestamp)', timezone)} end)")


def number_ok(expr: str) -> str:
    """SQL: TRUE when a VARCHAR is a finite number (NaN / inf would not survive JSON)."""
    return f"coalesce(isfinite(try_cast(trim({expr}) as double)), false)"


def json_number(expr: str) -> str:
    """SQL: a VARCHAR number as JSON number text, integral values kept integral (6, not 6.0)."""
    # try_cast('2.5' as bigint) rounds to 3 in DuckDB: only all-digit text takes the integer path.
    return (f"(case when regexp_full_match(trim({expr}), '-?[0-9]{{1,18}}') then try_cast(trim({expr}) as bigint)::varchar "
            f"else try_cast(trim({expr}) as double)::varchar end)")


def json_kind(expr: str) -> str:
    """SQL: the JSON type of a JSON value in user words (string, number, array, ...)."""
    return type_words(f"json_type({expr})")


def type_words(json_type: str) -> str:
    """SQL: a ``json_type()`` result in user words (``'a string'``, ``'an array'``, ...)."""
    return (f"(case {json_type} when 'VARCHAR' then 'a string' when 'ARRAY' then 'an array' "
            f"when 'BOOLEAN' then 'a boolean' when 'OBJECT' then 'an object' when 'NULL' then 'null' "
            f"when 'DOUBLE' then 'a decimal number' else 'a number' end)")


def integer_value(expr: str) -> str:
    """SQL: a VARCHAR whole number as BIGINT (``'12'``, ``'1.2e3'``, ``'1714600000000.0'``), else NULL.

    ``try_cast('1.5' as bigint)`` rounds to 2 in DuckDB, so a fraction is refused before casting.
    """
    d = f"try_cast(trim({expr}) as double)"
    return (f"(case when regexp_full_match(trim({expr}), '[+-]?[0-9]{{1,18}}') then try_cast(trim({expr}) as bigint) "
            f"when isfinite({d}) and {d} = floor({d}) then try_cast({d} as bigint) end)")


#: A check: (condition that means "bad", reason as SQL, detail as SQL). Ordered; the first wins.
Check = tuple[str, str, str]

#: The kind of every field the product reads. The rules of a kind are the same in every format
#: (docs/ingest.md, "Field types"); readers name what a column *is* (CustomerID is a user_id).
FIELD_KINDS: Final[dict[str, str]] = {
    "user_id": "id", "device_id": "id", "insert_id": "id", "item_id": "id", "order_id": "id",
    "event_type": "name",
    "session_id": "integer",
    "price": "number", "quantity": "number", "revenue": "number",
}
#: JSON types an id / a name may have, and what is expected, in words.
_ID_TYPES: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "id": (("VARCHAR", "BIGINT", "UBIGINT"), "a string or an integer"),
    "name": (("VARCHAR",), "a string"),
}


def is_one_of(expr: str, values: tuple[str, ...]) -> str:
    """SQL: ``expr`` equals one of ``values`` (NULL when ``expr`` is NULL).

    Written as ``=`` / ``or`` rather than ``in (...)``: DuckDB plans a constant IN list as a hash
    join, which made the type checks of every event several times slower.
    """
    return "(" + " or ".join(f"{expr} = {lit(v)}" for v in values) + ")"


def _maybe_not_a_string(kind: str, text: str) -> str:
    """SQL: cheap test on the text of a JSON value that it *may* not have been a JSON string.

    DuckDB writes an array / object as its JSON text, a boolean as ``true`` / ``false`` and a number
    as its digits; only values passing this test need their real JSON type (a parse), so the
    millions of plain string ids cost two byte comparisons each.
    """
    first = f"ord({text})"
    numeric = f"({first} between 48 and 57 or {first} = 45)"
    if kind == "id":  # integers are fine ids; a fraction is not
        numeric = f"({numeric} and (contains({text}, '.') or contains({text}, 'e') or contains({text}, 'E')))"
    return f"({first} = 91 or {first} = 123 or {text} = 'true' or {text} = 'false' or {numeric})"


def field_checks(field: str, text: str, *, json_type: str | None = None, label: str | None = None,
                 nul_possible: str | None = None, parsed: str | None = None) -> list[Check]:
    """Checks of one field's value: the one definition of the type rules, shared by every format.

    Parameters
    ----------
    field : str
        A key of :data:`FIELD_KINDS`: what the value is (``user_id``, ``revenue``, ...).
    text : str
        SQL VARCHAR expression: the value as text (a JSON string unquoted, any other JSON value as
        its JSON text, a CSV cell as it is); NULL when absent or JSON null.
    json_type : str or None
        SQL expression giving the value's ``json_type()``, for JSON formats (evaluated only for the
        rare values whose text does not settle it). ``None`` for CSV, whose values are all text.
    label : str or None
        The name shown in details (``event_properties.revenue``, ``CustomerID``); default ``field``.
    nul_possible : str or None
        Optional SQL boolean, false when the value cannot hold a NUL (a JSON record without a
        ``\\u0000`` escape): skips the search on the millions of clean records.
    parsed : str or None
        For ``session_id``: the caller's :func:`integer_value` of ``text``, so it is not parsed twice.

    Returns
    -------
    list[Check]
        For ids and event_type: a JSON type other than a string (or, for ids, an integer) is
        ``invalid_type``; a NUL is ``invalid_id`` (removing it could merge two users). For numbers
        and session_id, the text must be a finite number / a whole number (``invalid_number``): an
        array, object or boolean fails that too, with the same reason in every format. Times are
        checked by :func:`time_checks`. Callers place the checks among their others in the order
        of :data:`~cohortflow.ingest.reasons.REASONS`. Times have their own rules, in
        :func:`time_checks` (an array or a boolean is not a time either).
    """
    kind = FIELD_KINDS[field]
    label = label or field
    if kind in _ID_TYPES:
        checks: list[Check] = []
        if json_type is not None:
            accepted, expected = _ID_TYPES[kind]
            checks.append((f"{_maybe_not_a_string(kind, text)} and not {is_one_of(json_type, accepted)}",
                           "'invalid_type'", f"{lit(label + ' is ')} || {type_words(json_type)} || "
                           f"{lit(f', expected {expected}: ')} || {shown(text)}"))
        guard = f"{nul_possible} and " if nul_possible else ""
        checks.append((f"{guard}contains({text}, chr(0))", "'invalid_id'",
                       f"{lit(label + ' ')} || {shown(text)} || ' contains a NUL character'"))
        return checks
    if kind == "integer":
        return [(f"{text} is not null and {parsed or integer_value(text)} is null", "'invalid_number'",
                 f"{lit(label + ' ')} || {shown(text)} || ' is not a whole number'")]
    return [(f"{text} is not null and not {number_ok(text)}", "'invalid_number'",
             f"{lit(label + ' ')} || {shown(text)} || ' is not a number'")]


def time_checks(time_raw: str, time_value: str, now: datetime, field: str) -> list[Check]:
    """Checks for the shared time rules, in order.

    ``time_raw`` is the VARCHAR as found, ``time_value`` the parsed UTC timestamp expression.
    """
    return [
        (f"{time_raw} is null", "'invalid_time'", f"'{field} is missing'"),
        (f"{time_value} is null", "'invalid_time'",
         f"'{field} ' || {shown(time_raw)} || ' is not a time (epoch ms, ISO-8601 or the mapping''s time_format)'"),
        (f"{time_value} > {ts_lit(now)} + interval {FUTURE_TOLERANCE_HOURS} hour", "'future_time'",
         f"'{field} ' || strftime({time_value}, '%Y-%m-%d %H:%M:%S') || ' UTC is more than "
         f"{FUTURE_TOLERANCE_HOURS} h after the ingest clock ({now:%Y-%m-%d %H:%M:%S} UTC)'"),
        (f"{time_value} < timestamp '{OLDEST_ACCEPTED}'", "'too_old'",
         f"'{field} ' || strftime({time_value}, '%Y-%m-%d %H:%M:%S') || ' UTC is before {OLDEST_ACCEPTED}'"),
    ]


def id_checks(user_id: str, device_id: str) -> list[Check]:
    """Checks for Amplitude's identity rules (one of user_id / device_id, each >= 5 characters)."""
    return [
        (f"{user_id} is null and {device_id} is null", "'missing_user_and_device_id'",
         "'user_id and device_id are both missing or empty'"),
        (f"length({user_id}) < {MIN_ID_LENGTH}", "'id_too_short'",
         f"'user_id ' || {shown(user_id)} || ' is shorter than {MIN_ID_LENGTH} characters'"),
        (f"length({device_id}) < {MIN_ID_LENGTH}", "'id_too_short'",
         f"'device_id ' || {shown(device_id)} || ' is shorter than {MIN_ID_LENGTH} characters'"),
    ]


def failed_check(checks: list[Check]) -> str:
    """SQL: the 1-based index of the first failing check, NULL when the row passes.

    Conditions are evaluated once, here; reason and detail are then looked up by index
    (evaluating the conditions again for each would double the cost on millions of rows).
    """
    return "case " + " ".join(f"when {cond} then {i}" for i, (cond, _, _) in enumerate(checks, 1)) + " end"


def reason_of(index: str, checks: list[Check]) -> str:
    """SQL: the reason code of failed check ``index``."""
    return f"case {index} " + " ".join(f"when {i} then {r}" for i, (_, r, _) in enumerate(checks, 1)) + " end"


def detail_of(index: str, checks: list[Check]) -> str:
    """SQL: the detail text of failed check ``index``."""
    return f"case {index} " + " ".join(f"when {i} then {d}" for i, (_, _, d) in enumerate(checks, 1)) + " end"
