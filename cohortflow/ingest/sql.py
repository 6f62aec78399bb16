"""Small SQL builders shared by the format readers (quoting, time parsing, checks).

Everything here returns DuckDB SQL text; values from files never reach this module
(they stay in DuckDB columns), only names from mappings and options, which are quoted.
"""

from __future__ import annotations

from datetime import datetime

from cohortflow.ingest.reasons import FUTURE_TOLERANCE_HOURS, MIN_ID_LENGTH, OLDEST_ACCEPTED


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
    """SQL text showing a value in a rejection detail: quoted, cut to ``width`` characters."""
    return (f"coalesce('''' || (case when length({expr}) > {width} "
            f"then left({expr}, {width}) || '…' else {expr} end) || '''', 'null')")


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
    return (f"(case json_type({expr}) when 'VARCHAR' then 'a string' when 'ARRAY' then 'an array' "
            f"when 'BOOLEAN' then 'a boolean' when 'OBJECT' then 'an object' when 'NULL' then 'null' "
            f"else 'a number' end)")


#: A check: (condition that means "bad", reason as SQL, detail as SQL). Ordered; the first wins.
Check = tuple[str, str, str]


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
