"""Amplitude HTTP V2 request bodies and Amplitude export files, parsed in DuckDB SQL.

Lines are cut in Python (:mod:`cohortflow.ingest.sources`) and every check runs vectorised
in SQL. One ``json_transform`` per record pulls out all fields at once: every JSON function
call re-parses its input, so fewer calls is most of the speed.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import duckdb
import pyarrow as pa

from cohortflow.ingest.reasons import TRUNCATED_PAYLOAD_CHARS
from cohortflow.ingest.sources import DEFAULT_BLOCK_BYTES, iter_line_blocks, lines_table, read_all_text
from cohortflow.ingest.sql import (Check, blank_to_null, detail_of, failed_check, field_checks, id_checks, integer_value,
                                   is_one_of, json_kind, json_may_hold_nul, json_number, lit, reason_of, shown,
                                   strip_json_nul, time_checks, time_expr, truncated, ts_lit)
from cohortflow.ingest.stage import Counts, FileContext, create_stage, write_stage

_WS = "' ' || chr(9) || chr(10) || chr(13)"

# Every field either format may carry. json_transform gives NULL for absent keys and text for
# strings, numbers and nested values, so one parse per record yields every value. The JSON type
# a rule needs (``["abcdef"]`` is not the user id ``'["abcdef"]'``) is looked up only for the
# rare values whose text does not settle it (see sql.field_checks): a type per field per event
# would double the time.
_SCALARS = ("event_type", "user_id", "device_id", "time", "event_time", "insert_id", "$insert_id", "session_id",
            "price", "quantity", "revenue", "productId")
_EVENT_STRUCT = json.dumps({**dict.fromkeys(_SCALARS, "VARCHAR"), "event_properties": "JSON", "user_properties": "JSON"})
_NUMBER_FIELDS = ("price", "quantity", "revenue")
# The properties the product reads, type-checked like the same fields everywhere else.
_PROPERTIES = (*_NUMBER_FIELDS, "item_id", "order_id")
_PROPERTIES_STRUCT = json.dumps(dict.fromkeys(_PROPERTIES, "VARCHAR"))
_BODY_STRUCT = json.dumps({"events": "JSON", "identification": "JSON"})

# Identify operations: $setOnce then $set are applied. The others ($add, $append, $unset, ...)
# describe changes to state we do not hold, so they are dropped (docs/ingest.md says so).
_USER_OPS = ("$set", "$setOnce", "$add", "$append", "$prepend", "$unset", "$preInsert", "$postInsert",
             "$remove", "$clearAll")
_DROP_OPS = json.dumps({op: None for op in _USER_OPS})

_STAGE_COLUMNS = ["source_row", "payload", "target", "reason", "detail", "insert_id", "user_id", "device_id",
                  "event_type", "event_time", "session_id", "event_properties", "user_properties", "updated_at"]


def _json_path(key: str) -> str:
    """SQL literal: the JSON path of top-level key ``key``."""
    return lit(f"$.{json.dumps(key)}")


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
    document = not export and looks_like_document(path)
    if document:
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
            create_stage(con, stage, _stage_sql(lines_view, ctx, export=export, document=document,
                                                records_before=records_before), _STAGE_COLUMNS)
        finally:
            with contextlib.suppress(duckdb.Error):  # surface the real error, not an aborted-transaction one
                con.unregister(lines_view)
        block_counts = write_stage(con, stage, ctx)
        records_before += block_counts.rows_read
        counts.add(block_counts)
        con.execute(f"drop table {stage}")
    return counts


def _stage_sql(lines: str, ctx: FileContext, *, export: bool, document: bool, records_before: int) -> str:
    """SQL turning ``lines`` (see :func:`lines_table`) into stage rows, one per record."""
    now, limit = ctx.now, ctx.max_field_bytes
    time_key = "event_time" if export else "time"
    # Every field the product reads is checked by the shared rules (sql.field_checks), from its text
    # (column t_<stem>) and, only when that text leaves it open, its JSON type.
    def top(key: str, kind: str | None = None, stem: str | None = None) -> tuple[str, str, str, str, str]:
        return stem or key, f"e.{json.dumps(key)}", f"json_type(rec, {_json_path(key)})", kind or key, key

    def prop(key: str) -> tuple[str, str, str, str, str]:
        return (f"p_{key}", f"p.{key}", f"json_type(e.event_properties, {_json_path(key)})", key,
                f"event_properties.{key}")

    # (column stem, text, JSON type (looked up lazily), field kind, label in details)
    read = [top("event_type"), top("user_id"), top("device_id"),
            # "$insert_id" wins over "insert_id" when both are there, for the type as for the value.
            ("insert_id", "coalesce(e.\"$insert_id\", e.insert_id)",
             f"json_type(rec, case when e.\"$insert_id\" is not null then {_json_path('$insert_id')} "
             f"else {_json_path('insert_id')} end)", "insert_id", "$insert_id" if export else "insert_id"),
            top("productId", "item_id", "product_id"), prop("item_id"), prop("order_id"),
            *[top(f) for f in _NUMBER_FIELDS], *[prop(f) for f in _NUMBER_FIELDS], top("session_id")]
    text_columns = ",\n".join(f"{text} as t_{stem}" for stem, text, _, _, _ in read)
    # A NUL in JSON text is always the escape \u0000: records without one skip the per-field search.
    rules = {stem: field_checks(kind, f"t_{stem}", json_type=jtype, label=label, nul_possible="may_hold_nul",
                                parsed="session_id" if kind == "session_id" else None)
             for stem, _, jtype, kind, label in read}

    checks: list[Check] = [
        ("pre_reason is not null", "pre_reason", "pre_detail"),
        # A line above the limit never gets here (pre_reason); an event of a one-document file may.
        (f"strlen(rec) > {limit}", "'field_too_large'",
         f"'event is ' || format('{{:,}}', strlen(rec)) || ' bytes, above the limit of {limit:,} bytes "
         f"(max_field_bytes, --max-field-bytes)'"),
        ("not is_object", "'not_an_object'", f"'expected a JSON object (an event), got ' || {shown('rtrim(rec)')}"),
        ("e is null", "'invalid_json'", f"'not valid JSON: ' || {shown(f'rtrim(rec, {_WS})')}"),
        ("json_type(e.event_properties) not in ('OBJECT', 'NULL')", "'properties_not_object'",
         f"'event_properties is ' || {json_kind('e.event_properties')} || ', expected an object: ' "
         f"|| {shown('e.event_properties')}"),
        ("json_type(e.user_properties) not in ('OBJECT', 'NULL')", "'properties_not_object'",
         f"'user_properties is ' || {json_kind('e.user_properties')} || ', expected an object: ' "
         f"|| {shown('e.user_properties')}"),
        *[c for stem in ("event_type", "user_id", "device_id", "insert_id", "product_id", "p_item_id", "p_order_id")
          for c in rules[stem]],
        ("kind = 'event' and event_type is null", "'missing_event_type'", "'event_type is missing or empty'"),
        *id_checks("user_id", "device_id"),
        *[(f"kind = 'event' and {cond}", code, det) for cond, code, det in time_checks("time_raw", "event_time", now, time_key)],
        *[c for f in _NUMBER_FIELDS for c in rules[f]],
        *[c for f in _NUMBER_FIELDS for c in rules[f"p_{f}"]],
        *rules["session_id"],
    ]

    # Amplitude's top-level revenue fields go into event_properties unless already there;
    # item_id is a string in our data model, so numeric ones are converted.
    item_id_type = f"json_type(e.event_properties, {_json_path('item_id')})"
    extras = ("concat_ws(',', "
              + ", ".join(
                  f"case when e.{f} is not null and not coalesce(json_exists(e.event_properties, '$.{f}'), false) "
                  f"then '\"{f}\":' || {json_number(f't_{f}')} end" for f in _NUMBER_FIELDS)
              + ", case when e.productId is not null and not coalesce(json_exists(e.event_properties, '$.item_id'), false) "
                "then '\"item_id\":' || to_json(t_product_id) "
                f"when {is_one_of(item_id_type, ('BIGINT', 'UBIGINT'))} then '\"item_id\":' || to_json(t_p_item_id) end)")
    up = "e.user_properties"
    flat_user_props = (
        f"(case when json_exists({up}, '$.\"$set\"') or json_exists({up}, '$.\"$setOnce\"') "
        f"then json_merge_patch(json_merge_patch("
        f"case when json_type({up}, '$.\"$setOnce\"') = 'OBJECT' then {up}->'$.\"$setOnce\"' else '{{}}' end, "
        f"json_merge_patch({up}, {lit(_DROP_OPS)})), "
        f"case when json_type({up}, '$.\"$set\"') = 'OBJECT' then {up}->'$.\"$set\"' else '{{}}' end) "
        f"else {up} end)")
    identify = "(kind = 'identify' or event_type = '$identify')"
    payload = _redact(f"coalesce(bad_utf8, rec_payload, rtrim(rec, {_WS}))")
    return f"""
        with recs as ({_records_sql(lines, export=export, records_before=records_before,
                                    line_limit=None if document else limit)}),
        parsed as (
            select *, case when pre_reason is null and is_object and strlen(rec) <= {limit}
                           then try(json_transform(rec, {lit(_EVENT_STRUCT)})) end as e
            from recs
        ),
        props as (
            select *, case when starts_with(e.event_properties, '{{')
                           then try(json_transform(e.event_properties, {lit(_PROPERTIES_STRUCT)})) end as p,
                   {json_may_hold_nul('rec')} as may_hold_nul
            from parsed
        ),
        texts as (select *, {text_columns} from props),
        fields as (
            select *,
                   {blank_to_null('t_user_id')} as user_id,
                   {blank_to_null('t_device_id')} as device_id,
                   {blank_to_null('t_event_type')} as event_type,
                   {blank_to_null(f'e.{time_key}')} as time_raw,
                   {integer_value('t_session_id')} as session_id,
                   {blank_to_null('t_insert_id')} as insert_id
            from texts
        ),
        timed as (select *, {time_expr('time_raw')} as event_time from fields),
        checked as materialized (select *, {failed_check(checks)} as failed from timed),
        shaped as (
            select *, {reason_of('failed', checks)} as reason,
                   case when failed is null then {extras} end as extras,
                   {identify} as is_identify
            from checked
        ),
        outputs as (
            select *,
                   case when reason is not null then {payload} end as full_payload,
                   case when reason is null and not is_identify
                        then case when extras <> '' then json_merge_patch(coalesce(e.event_properties, '{{}}'), '{{' || extras || '}}')
                                  else e.event_properties end end as props_out,
                   case when reason is null and is_identify then {flat_user_props}
                        when reason is null then e.user_properties end as user_props_out
            from shaped
        )
        select source_row,
               -- A payload above the size limit is kept cut (and says so); the api_key is gone before the cut.
               case when strlen(full_payload) > {limit} then {truncated('full_payload', 'strlen(full_payload)')}
                    else full_payload end as payload,
               case when is_identify then 'users' else 'events' end as target,
               reason,
               case when reason is not null then {_redact(f"coalesce(line_label, '') || {detail_of('failed', checks)}")}
                    || case when reason = 'field_too_large' and length(full_payload) > {TRUNCATED_PAYLOAD_CHARS}
                            then '; the payload keeps its first {TRUNCATED_PAYLOAD_CHARS:,} characters' else '' end
               end as detail,
               insert_id,
               case when reason is null and is_identify then coalesce(user_id, device_id) else user_id end as user_id,
               device_id, event_type, event_time, session_id,
               -- NULs leave property names and values (Postgres cannot hold them); ids with one were rejected.
               {strip_json_nul('props_out')} as event_properties,
               {strip_json_nul('user_props_out')} as user_properties,
               case when reason is null and is_identify then coalesce(event_time, {ts_lit(now)}) end as updated_at
        from outputs"""


def _records_sql(lines: str, *, export: bool, records_before: int, line_limit: int | None) -> str:
    """SQL: one row per record ``(source_row, kind, is_object, rec, rec_payload, bad_utf8, pre_reason, pre_detail, line_label)``.

    Export files: one record per non-blank line, ``source_row`` = its line number. HTTP V2: a line
    (or the whole document) is an event or a request body whose ``events`` / ``identification``
    lists are unnested; ``source_row`` numbers the records of the file in order. A line longer
    than ``line_limit`` bytes (None: no limit, for a one-document file) is not parsed at all.
    """
    # The CASE keeps the rtrim (a copy) off the millions of short lines.
    too_large = ("false" if line_limit is None else
                 f"case when strlen(line) > {line_limit} then strlen(rtrim(line, {_WS})) > {line_limit} else false end")
    base = f"""
        select line_no, line, bad_utf8,
               case when {too_large} then 'too_large'
                    when bad_utf8 is not null then 'bad_utf8'
                    when first_byte = 123 or starts_with(ltrim(line, {_WS}), '{{') then 'object'
                    when json_valid(line) then 'non_object'
                    else 'invalid' end as line_kind
        from {lines} where not blank"""
    line_checks = f"""
        case line_kind when 'bad_utf8' then 'invalid_json' when 'invalid' then 'invalid_json'
                       when 'non_object' then 'not_an_object' when 'too_large' then 'field_too_large' end as pre_reason,
        case line_kind
            when 'bad_utf8' then 'line is not valid UTF-8'
            when 'invalid' then 'not valid JSON: ' || {shown(f'rtrim(line, {_WS})')}
            when 'non_object' then 'expected a JSON object (an event or a request body), got ' || {shown(f'rtrim(line, {_WS})')}
            when 'too_large' then 'line is ' || format('{{:,}}', strlen(rtrim(line, {_WS}))) || ' bytes, above the limit of '
                                  || format('{{:,}}', {line_limit or 0}) || ' bytes (max_field_bytes, --max-field-bytes); not parsed'
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
