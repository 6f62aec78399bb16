"""Amplitude HTTP V2 request bodies and Amplitude export files, parsed in DuckDB SQL.

Lines are cut in Python (:mod:`cohortflow.ingest.sources`) and every check runs vectorised
in SQL. One ``json_transform`` per record pulls out all fields at once: every JSON function
call re-parses its input, so fewer calls is most of the speed.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from cohortflow.ingest.sources import DEFAULT_BLOCK_BYTES, iter_line_blocks, lines_table, read_all_text
from cohortflow.ingest.sql import (Check, blank_to_null, detail_of, failed_check, id_checks, json_kind, json_number,
                                   lit, number_ok, reason_of, shown, time_checks, time_expr, ts_lit)
from cohortflow.ingest.stage import Counts, FileContext, create_stage, write_stage

_WS = "' ' || chr(9) || chr(10) || chr(13)"

# Every field either format may carry. json_transform gives NULL for absent keys and text
# for numbers and nested values, so one parse per record yields everything.
_EVENT_STRUCT = json.dumps({
    "event_type": "VARCHAR", "user_id": "VARCHAR", "device_id": "VARCHAR",
    "time": "VARCHAR", "event_time": "VARCHAR", "insert_id": "VARCHAR", "$insert_id": "VARCHAR",
    "session_id": "VARCHAR", "event_properties": "JSON", "user_properties": "JSON",
    "price": "VARCHAR", "quantity": "VARCHAR", "revenue": "VARCHAR", "productId": "VARCHAR",
})
_BODY_STRUCT = json.dumps({"events": "JSON", "identification": "JSON"})

# Identify operations: $setOnce then $set are applied. The others ($add, $append, $unset, ...)
# describe changes to state we do not hold, so they are dropped (docs/ingest.md says so).
_USER_OPS = ("$set", "$setOnce", "$add", "$append", "$prepend", "$unset", "$preInsert", "$postInsert",
             "$remove", "$clearAll")
_DROP_OPS = json.dumps({op: None for op in _USER_OPS})

_STAGE_COLUMNS = ["source_row", "payload", "target", "reason", "detail", "insert_id", "user_id", "device_id",
                  "event_type", "event_time", "session_id", "event_properties", "user_properties", "updated_at"]


def _redact(expr: str) -> str:
    """SQL: hide api_key values in text that is stored (rejected payloads and details)."""
    return f"""regexp_replace({expr}, '"api_key"\\s*:\\s*"[^"]*"', '"api_key":"<redacted>"', 'g')"""


def looks_like_document(path: Path) -> bool:
    """True when the file is one (pretty-printed) JSON document rather than JSON lines.

    JSON lines: the first non-blank line is valid JSON on its own. Otherwise, if the whole
    content is valid JSON, it is one document. Anything else is read as lines, and the
    broken lines are rejected one by one.
    """
    for _, block in iter_line_blocks(path, block_bytes=1 << 20):
        for line in block.splitlines():
            if line.strip():
                try:
                    json.loads(line)
                    return False
                except (ValueError, UnicodeDecodeError):
                    break
        break
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16/32, which the SQL side does not.
        json.loads(read_all_text(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def ingest_amplitude(con: duckdb.DuckDBPyConnection, path: Path, ctx: FileContext, *, export: bool,
                     block_bytes: int = DEFAULT_BLOCK_BYTES) -> Counts:
    """Stage and write one Amplitude file (HTTP V2 bodies / events, or an export file).

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Warehouse connection, inside the file's transaction.
    path : Path
        The file (plain or gzip).
    ctx : FileContext
        Format, file, clock, temp-table prefix.
    export : bool
        True for ``amplitude-export`` (``event_time``, ``$insert_id``), False for HTTP V2.
    block_bytes : int
        Decompressed bytes per block; bounds memory on very large files.

    Returns
    -------
    Counts
    """
    counts = Counts()
    lines_view, stage = f"{ctx.prefix}_lines", f"{ctx.prefix}_stage"
    if not export and looks_like_document(path):
        # One document: the whole text is a single "line" (JSON does not care about its newlines).
        text = read_all_text(path).decode("utf-8")
        blocks = iter([pa.table({"line_no": pa.array([1], pa.int64()), "line": pa.array([text], pa.large_string()),
                                 "first_byte": pa.array([ord("{")], pa.uint8()), "blank": pa.array([False]),
                                 "bad_utf8": pa.nulls(1, pa.string())})])
    else:
        blocks = (lines_table(block, first) for first, block in iter_line_blocks(path, block_bytes))
    records_before = 0
    for table in blocks:
        con.register(lines_view, table)
        try:
            create_stage(con, stage, _stage_sql(lines_view, ctx.now, export=export, records_before=records_before),
                         _STAGE_COLUMNS)
        finally:
            with contextlib.suppress(duckdb.Error):  # surface the real error, not an aborted-transaction one
                con.unregister(lines_view)
        block_counts = write_stage(con, stage, ctx)
        records_before += block_counts.rows_read
        counts.add(block_counts)
        con.execute(f"drop table {stage}")
    return counts


def _stage_sql(lines: str, now: datetime, *, export: bool, records_before: int) -> str:
    """SQL turning ``lines`` (see :func:`lines_table`) into stage rows, one per record."""
    time_key = "event_time" if export else "time"
    checks: list[Check] = [
        ("pre_reason is not null", "pre_reason", "pre_detail"),
        ("not is_object", "'not_an_object'", f"'expected a JSON object (an event), got ' || {shown('rtrim(rec)')}"),
        ("e is null", "'invalid_json'", f"'not valid JSON: ' || {shown(f'rtrim(rec, {_WS})')}"),
        ("json_type(e.event_properties) not in ('OBJECT', 'NULL')", "'properties_not_object'",
         f"'event_properties is ' || {json_kind('e.event_properties')} || ', expected an object: ' "
         f"|| {shown('e.event_properties')}"),
        ("json_type(e.user_properties) not in ('OBJECT', 'NULL')", "'properties_not_object'",
         f"'user_properties is ' || {json_kind('e.user_properties')} || ', expected an object: ' "
         f"|| {shown('e.user_properties')}"),
        ("kind = 'event' and event_type is null", "'missing_event_type'", "'event_type is missing or empty'"),
        *id_checks("user_id", "device_id"),
        *[(f"kind = 'event' and {cond}", code, det) for cond, code, det in time_checks("time_raw", "event_time", now, time_key)],
        *[(f"e.{f} is not null and not {number_ok(f'e.{f}')}", "'invalid_number'",
           f"'{f} ' || {shown(f'e.{f}')} || ' is not a number'") for f in ("price", "quantity", "revenue")],
        ("e.session_id is not null and session_id is null", "'invalid_number'",
         f"'session_id ' || {shown('e.session_id')} || ' is not an integer'"),
    ]

    # Amplitude's top-level revenue fields go into event_properties unless already there;
    # item_id is a string in our data model, so numeric ones are converted.
    extras = ("concat_ws(',', "
              + ", ".join(
                  f"case when e.{f} is not null and not coalesce(json_exists(e.event_properties, '$.{f}'), false) "
                  f"then '\"{f}\":' || {json_number(f'e.{f}')} end" for f in ("price", "quantity", "revenue"))
              + ", case when e.productId is not null and not coalesce(json_exists(e.event_properties, '$.item_id'), false) "
                "then '\"item_id\":' || to_json(e.productId) "
                "when json_type(e.event_properties, '$.item_id') in ('BIGINT', 'UBIGINT', 'DOUBLE') "
                "then '\"item_id\":' || to_json(e.event_properties->>'$.item_id') end)")
    up = "e.user_properties"
    flat_user_props = (
        f"(case when json_exists({up}, '$.\"$set\"') or json_exists({up}, '$.\"$setOnce\"') "
        f"then json_merge_patch(json_merge_patch("
        f"case when json_type({up}, '$.\"$setOnce\"') = 'OBJECT' then {up}->'$.\"$setOnce\"' else '{{}}' end, "
        f"json_merge_patch({up}, {lit(_DROP_OPS)})), "
        f"case when json_type({up}, '$.\"$set\"') = 'OBJECT' then {up}->'$.\"$set\"' else '{{}}' end) "
        f"else {up} end)")
    identify = "(kind = 'identify' or event_type = '$identify')"
    return f"""
        with recs as ({_records_sql(lines, export=export, records_before=records_before)}),
        parsed as (
            select *, case when pre_reason is null and is_object then try(json_transform(rec, {lit(_EVENT_STRUCT)})) end as e
            from recs
        ),
        fields as (
            select *,
                   {blank_to_null('e.user_id')} as user_id,
                   {blank_to_null('e.device_id')} as device_id,
                   {blank_to_null('e.event_type')} as event_type,
                   {blank_to_null('e.' + time_key)} as time_raw,
                   coalesce(try_cast(trim(e.session_id) as bigint),
                            try_cast(try_cast(trim(e.session_id) as double) as bigint)) as session_id,
                   {blank_to_null('coalesce(e."$insert_id", e.insert_id)')} as insert_id
            from parsed
        ),
        timed as (select *, {time_expr('time_raw')} as event_time from fields),
        checked as materialized (select *, {failed_check(checks)} as failed from timed),
        shaped as (
            select *, {reason_of('failed', checks)} as reason,
                   case when failed is null then {extras} end as extras,
                   {identify} as is_identify
            from checked
        )
        select source_row,
               case when reason is not null then {_redact(f"coalesce(bad_utf8, rec_payload, rtrim(rec, {_WS}))")} end as payload,
               case when is_identify then 'users' else 'events' end as target,
               reason,
               case when reason is not null then {_redact(f"coalesce(line_label, '') || {detail_of('failed', checks)}")} end as detail,
               insert_id,
               case when reason is null and is_identify then coalesce(user_id, device_id) else user_id end as user_id,
               device_id, event_type, event_time, session_id,
               case when reason is null and not is_identify
                    then case when extras <> '' then json_merge_patch(coalesce(e.event_properties, '{{}}'), '{{' || extras || '}}')
                              else e.event_properties end end as event_properties,
               case when reason is null and is_identify then {flat_user_props}
                    when reason is null then e.user_properties end as user_properties,
               case when reason is null and is_identify then coalesce(event_time, {ts_lit(now)}) end as updated_at
        from shaped"""


def _records_sql(lines: str, *, export: bool, records_before: int) -> str:
    """SQL: one row per record ``(source_row, kind, is_object, rec, rec_payload, bad_utf8, pre_reason, pre_detail, line_label)``.

    Export files: one record per non-blank line, ``source_row`` = its line number. HTTP V2: a line
    (or the whole document) is an event or a request body whose ``events`` / ``identification``
    lists are unnested; ``source_row`` numbers the records of the file in order.
    """
    base = f"""
        select line_no, line, bad_utf8,
               case when bad_utf8 is not null then 'bad_utf8'
                    when first_byte = 123 or starts_with(ltrim(line, {_WS}), '{{') then 'object'
                    when json_valid(line) then 'non_object'
                    else 'invalid' end as line_kind
        from {lines} where not blank"""
    line_checks = f"""
        case line_kind when 'bad_utf8' then 'invalid_json' when 'invalid' then 'invalid_json'
                       when 'non_object' then 'not_an_object' end as pre_reason,
        case line_kind
            when 'bad_utf8' then 'line is not valid UTF-8'
            when 'invalid' then 'not valid JSON: ' || {shown(f'rtrim(line, {_WS})')}
            when 'non_object' then 'expected a JSON object (an event or a request body), got ' || {shown(f'rtrim(line, {_WS})')}
        end as pre_detail"""
    if export:
        return f"""
            select line_no as source_row, 'event' as kind, line_kind = 'object' as is_object, line as rec,
                   null::varchar as rec_payload, bad_utf8, {line_checks}, null::varchar as line_label
            from ({base})"""
    # HTTP V2: find request bodies with a cheap substring test before parsing them as bodies.
    body_list_error = """
            select line_no, {part}, 1, '{kind}', null, json_merge_patch(line, '{{"api_key":null}}')::varchar,
                   null, 'not_an_object', '"{key}" is ' || {kind_of} || ', expected a list of objects',
                   'line ' || line_no || ': ', true
            from cls where json_type(body.{key}) <> 'ARRAY'"""
    return f"""
        with b as ({base}),
        cls as (
            select *, case when line_kind = 'object' and (contains(line, '"events"') or contains(line, '"identification"'))
                           then try(json_transform(line, {lit(_BODY_STRUCT)})) end as body
            from b
        ),
        parts as (
            -- a plain event line, or a line rejected whole
            select line_no, 0 as part, 1 as idx, 'event' as kind, line as rec, null::varchar as rec_payload,
                   bad_utf8, {line_checks}, null::varchar as line_label, line_kind = 'object' as is_object
            from cls
            where body is null or (body.events is null and body.identification is null)
            union all {body_list_error.format(part=1, kind='event', key='events', kind_of=json_kind('body.events'))}
            union all {body_list_error.format(part=2, kind='identify', key='identification',
                                              kind_of=json_kind('body.identification'))}
            union all
            select line_no, 1, generate_subscripts(evs, 1), 'event', unnest(evs)::varchar, null, null, null, null, null, null
            from (select line_no, json_extract(body.events, '$[*]') as evs from cls where json_type(body.events) = 'ARRAY')
            union all
            select line_no, 2, generate_subscripts(ids, 1), 'identify', unnest(ids)::varchar, null, null, null, null, null, null
            from (select line_no, json_extract(body.identification, '$[*]') as ids
                  from cls where json_type(body.identification) = 'ARRAY')
        )
        select {records_before} + row_number() over (order by line_no, part, idx) as source_row,
               kind, coalesce(is_object, starts_with(rec, '{{')) as is_object, rec, rec_payload, bad_utf8,
               pre_reason, pre_detail,
               coalesce(line_label, case when part > 0 then 'line ' || line_no || ', '
                                           || case when kind = 'event' then 'event ' else 'identification ' end
                                           || idx || ': ' end) as line_label
        from parts"""
