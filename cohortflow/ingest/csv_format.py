"""Any CSV, through a :class:`~cohortflow.ingest.mapping.CsvMapping`, into events, users or items."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cohortflow.ingest.csv_reader import CsvRecords, load_csv_records
from cohortflow.ingest.mapping import TARGET_FIELDS, CsvMapping
from cohortflow.ingest.sources import DEFAULT_BLOCK_BYTES
from cohortflow.ingest.sql import (FIELD_KINDS, Check, blank_to_null, detail_of, failed_check, field_checks, id_checks,
                                   ident, integer_value, json_number, lit, reason_of, shown, strip_nul, time_checks,
                                   time_expr, ts_lit)
from cohortflow.ingest.stage import Counts, FileContext, create_stage, write_stage

_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")


@dataclass(frozen=True)
class _Resolved:
    """A mapping resolved against one file's header."""

    fields: dict[str, str]           # target -> SQL expression (column, constant); absent = not mapped
    properties: dict[str, str]       # property -> SQL expression
    missing: list[tuple[str, str]]   # (where it is used, column) for mapped columns the CSV lacks


def is_boolean_name(name: str) -> bool:
    """Fields and properties named ``is_*`` / ``has_*`` hold booleans."""
    return name.startswith(("is_", "has_"))


def resolve_mapping(mapping: CsvMapping, entity: str, columns: tuple[str, ...]) -> _Resolved:
    """Bind a mapping to a CSV header: explicit fields, then same-named columns, then properties.

    Parameters
    ----------
    mapping : CsvMapping
        The user's mapping (may be empty).
    entity : str
        events / users / items.
    columns : tuple[str, ...]
        The CSV header.

    Returns
    -------
    _Resolved
    """
    by_lower = {c.lower(): c for c in reversed(columns)}  # first column wins on case-insensitive clashes
    fields: dict[str, str] = {}
    used: set[str] = set()
    missing: list[tuple[str, str]] = []

    def source(where: str, spec: str) -> str | None:
        if spec.startswith(":"):
            return lit(spec[1:])
        if spec not in columns:
            missing.append((where, spec))
            return None
        used.add(spec)
        return ident(spec)

    for target in TARGET_FIELDS[entity]:
        if target in mapping.fields:
            expr = source(target, mapping.fields[target])
            if expr is not None:
                fields[target] = expr
        elif target in by_lower:
            fields[target] = ident(by_lower[target])
            used.add(by_lower[target])
    if entity == "users" and "updated_at" not in fields and "created_at" in by_lower:
        # A user's attributes are true from the moment the account was created.
        fields["updated_at"] = ident(by_lower["created_at"])

    properties: dict[str, str] = {}
    if mapping.properties is not None:
        for name, spec in mapping.properties.items():
            expr = source(f"properties.{name}", spec)
            if expr is not None:
                properties[name] = expr
    else:
        for column in columns:
            if column not in used:
                properties[column] = ident(column)
    return _Resolved(fields=fields, properties=properties, missing=missing)


def ingest_csv(con: duckdb.DuckDBPyConnection, path: Path, ctx: FileContext, mapping: CsvMapping | None, *,
               block_bytes: int = DEFAULT_BLOCK_BYTES) -> Counts:
    """Stage and write one CSV file as ``ctx.entity`` rows.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Warehouse connection, inside the file's transaction.
    path : Path
        The CSV (plain or gzip); first line is the header.
    ctx : FileContext
        Format, entity, file, clock, temp-table prefix, field-size limit.
    mapping : CsvMapping or None
        Column mapping; ``None`` maps same-named columns and keeps the rest as properties.
    block_bytes : int
        Decompressed bytes read per block; bounds memory on very large files.

    Returns
    -------
    Counts
    """
    m = mapping or CsvMapping()
    if m.entity != ctx.entity:
        m = m.for_entity(ctx.entity)
    recs = load_csv_records(con, path, ctx.prefix, max_field_bytes=ctx.max_field_bytes, block_bytes=block_bytes)
    resolved = resolve_mapping(m, ctx.entity, recs.columns)
    stage = f"{ctx.prefix}_stage"
    sql, columns = _stage_sql(recs, resolved, m, ctx)
    create_stage(con, stage, sql, columns)
    return write_stage(con, stage, ctx)


def _property_value(name: str, expr: str, m: CsvMapping) -> tuple[str, list[Check]]:
    """SQL for one property's JSON value (NULL when empty) and the checks its type needs."""
    v = blank_to_null(expr)
    kind = FIELD_KINDS.get(name)
    if kind == "number":
        return f"case when {v} is not null then {json_number(v)} end", field_checks(name, v)
    if kind == "id":
        # item_id / order_id are keys downstream: a NUL rejects the row rather than being removed.
        return f"case when {v} is not null then to_json({expr}) end", field_checks(name, expr)
    if is_boolean_name(name):
        return (f"case when lower({v}) in {_TRUE} then 'true' when lower({v}) in {_FALSE} then 'false' end",
                [(f"{v} is not null and lower({v}) not in {_TRUE + _FALSE}", "'invalid_boolean'",
                  f"'{_sq(name)} ' || {shown(v)} || ' is not a boolean (true/false/1/0/yes/no)'")])
    if name.endswith("_at"):
        ts = time_expr(v, time_format=m.time_format, timezone=m.timezone)
        return (f"case when {v} is not null then to_json(strftime({ts}, '%Y-%m-%dT%H:%M:%SZ')) end",
                [(f"{v} is not null and {ts} is null", "'invalid_time'",
                  f"'{_sq(name)} ' || {shown(v)} || ' is not a time (epoch ms, ISO-8601 or the mapping''s time_format)'")])
    # Plain strings land as written (the raw layer keeps '  Bruno@Example.COM '; cleaning is downstream),
    # except NUL characters, which Postgres text cannot hold (docs/ingest.md).
    return f"case when {v} is not null then to_json({strip_nul(expr)}) end", []


def _raw(r: _Resolved, target: str) -> str:
    """SQL: a target field's value as it is in the CSV (not trimmed), NULL when nothing maps to it."""
    return r.fields.get(target, "null::varchar")


def _sq(text: str) -> str:
    """Escape for use inside a SQL string literal."""
    return text.replace("'", "''")


def _json_object_sql(values: dict[str, str]) -> str:
    """SQL: a JSON object from name -> JSON-text expressions, leaving out NULL values."""
    if not values:
        return "'{}'"
    parts = ", ".join(f"case when {v} is not null then {lit(_json_key(k))} || ':' || {v} end" for k, v in values.items())
    return f"('{{' || concat_ws(',', {parts}) || '}}')"


def _json_key(name: str) -> str:
    return json.dumps(name)


def _stage_sql(recs: CsvRecords, r: _Resolved, m: CsvMapping, ctx: FileContext) -> tuple[str, list[str]]:
    f = {k: blank_to_null(v) for k, v in r.fields.items()}
    null = "null::varchar"
    checks: list[Check] = []
    if r.missing:
        where, column = r.missing[0]
        names = ", ".join(recs.columns)
        checks.append(("true", "'missing_column'",
                       lit(f"column {column!r} (mapped to {where}) is not in the CSV; its columns are: {names}")))

    prop_values: dict[str, str] = {}
    prop_checks: list[Check] = []
    for name, expr in r.properties.items():
        value, more = _property_value(name, expr, m)
        prop_values[name] = value
        prop_checks += more

    def time_of(target: str) -> tuple[str, str]:
        raw = f.get(target, null)
        return raw, time_expr(raw, time_format=m.time_format, timezone=m.timezone)

    out: dict[str, str] = {}
    if ctx.entity == "events":
        user_id, device_id = f.get("user_id", null), f.get("device_id", null)
        raw_time, event_time = time_of("event_time")
        session = f.get("session_id", null)
        checks += [
            *[c for name in ("event_type", "user_id", "device_id", "insert_id") for c in field_checks(name, _raw(r, name))],
            (f"{f.get('event_type', null)} is null", "'missing_event_type'",
             "'event_type is missing or empty'" if "event_type" in f else
             lit(f"event_type: no column is mapped to it (columns: {', '.join(recs.columns)})")),
            *id_checks(user_id, device_id),
            *time_checks(raw_time, event_time, ctx.now, "event_time"),
            *field_checks("session_id", session),
        ]
        out = {"target": "'events'", "insert_id": f.get("insert_id", null), "user_id": user_id,
               "device_id": device_id, "event_type": f.get("event_type", null), "event_time": event_time,
               "session_id": integer_value(session), "event_properties": _json_object_sql(prop_values)}
    elif ctx.entity == "users":
        user_id = f.get("user_id", null)
        checks += [
            *field_checks("user_id", _raw(r, "user_id")),
            (f"{user_id} is null", "'missing_user_id'", "'user_id is missing or empty'" if "user_id" in f else
             lit(f"user_id: no column is mapped to it (columns: {', '.join(recs.columns)})")),
            *id_checks(user_id, null)[1:2],
        ]
        updated = None
        if "updated_at" in f:
            raw_time, updated = time_of("updated_at")
            checks += time_checks(raw_time, updated, ctx.now, "updated_at")
        out = {"target": "'users'", "user_id": user_id, "user_properties": _json_object_sql(prop_values),
               "updated_at": updated or ts_lit(ctx.now)}
    else:
        item_id, price, stock = f.get("item_id", null), f.get("price", null), f.get("is_in_stock", null)
        checks += [
            *field_checks("item_id", _raw(r, "item_id")),
            (f"{item_id} is null", "'missing_item_id'", "'item_id is missing or empty'" if "item_id" in f else
             lit(f"item_id: no column is mapped to it (columns: {', '.join(recs.columns)})")),
            *field_checks("price", price),
            (f"{stock} is not null and lower({stock}) not in {_TRUE + _FALSE}", "'invalid_boolean'",
             f"'is_in_stock ' || {shown(stock)} || ' is not a boolean (true/false/1/0/yes/no)'"),
        ]
        updated = None
        if "updated_at" in f:
            raw_time, updated = time_of("updated_at")
            checks += time_checks(raw_time, updated, ctx.now, "updated_at")
        out = {"target": "'items'", "item_id": item_id, "item_name": strip_nul(f.get("item_name", null)),
               "category": strip_nul(f.get("category", null)), "price": f"try_cast({price} as double)",
               "is_in_stock": f"case when lower({stock}) in {_TRUE} then true when lower({stock}) in {_FALSE} then false end",
               "item_properties": _json_object_sql(prop_values), "updated_at": updated or ts_lit(ctx.now)}
    checks += prop_checks

    payload = recs.payload_sql()
    failed = failed_check(checks) if checks else "null::integer"
    outputs = ", ".join(f"case when failed is null then {expr} end as {name}" if name != "target" else f"{expr} as target"
                        for name, expr in out.items())
    sql = f"""
        with t as (select *, {failed} as failed from {recs.table})
        select __source_row as source_row,
               case when failed is not null then {payload} end as payload,
               {reason_of('failed', checks) if checks else 'null'} as reason,
               {detail_of('failed', checks) if checks else 'null'} as detail,
               {outputs}
        from t
        union all by name
        select source_row, payload, {lit(ctx.entity)} as target, reason, detail
        from {recs.rejected}"""
    return sql, ["source_row", "payload", "reason", "detail", *out]
