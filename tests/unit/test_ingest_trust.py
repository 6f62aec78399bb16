"""Input that used to be mis-read: byte-order marks, huge values, wrong JSON types, broken CSV quoting, NUL.

Each test feeds one kind of bad (or merely unusual) input next to good rows, and checks that the bad
row is rejected with a reason naming the field and line, that good rows of the same file still land,
and that the same value gets the same verdict in every format.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.ingest import REASONS, IngestError, IngestSummary, ingest_files, sources
from cohortflow.warehouse import connect

NOW = datetime(2024, 6, 1, 12, 0, 0)
BOM = b"\xef\xbb\xbf"
DOC = (Path(__file__).resolve().parents[2] / "docs" / "ingest.md").read_text()


def http_event(**fields: object) -> dict:
    base = {"user_id": "user-00001", "event_type": "view_item", "time": 1714600000000}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def export_event(**fields: object) -> dict:
    base = {"$insert_id": "ins-1", "user_id": "user-00001", "event_type": "view_item",
            "event_time": "2024-05-01 10:00:00.000000"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def write(path: Path, data: bytes, *, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def ingest(path: Path, fmt: str, **kwargs: object) -> tuple[duckdb.DuckDBPyConnection, IngestSummary]:
    con = duckdb.connect()
    summary = ingest_files(con, [path], fmt, now=NOW, **kwargs)
    return con, summary


def rejected(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("select source_row, reason, detail, payload from raw.rejected_events order by 1").fetchall()


def accounted(summary: IngestSummary) -> bool:
    f = summary.files[0]
    return f.rows_read == f.rows_loaded + f.rows_duplicate + f.rows_rejected


# --- 5. A UTF-8 byte-order mark at the start of a file is dropped -------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(("fmt", "make"), [("amplitude", http_event), ("amplitude-export", export_event)])
def test_bom_at_the_start_of_json_lines_is_dropped(tmp_path: Path, fmt: str, make, gz: bool) -> None:
    lines = [json.dumps(make(insert_id="a", **{"$insert_id": "a"})), json.dumps(make(insert_id="b", **{"$insert_id": "b"}))]
    path = write(tmp_path / "events.jsonl", BOM + ("\n".join(lines) + "\n").encode(), gz=gz)
    con, summary = ingest(path, fmt)
    assert rejected(con) == []
    assert summary.files[0].rows_loaded == 2
    assert con.execute("select source_row from raw.events order by 1").fetchall() == [(1,), (2,)]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_bom_before_one_pretty_printed_document_is_dropped(tmp_path: Path, gz: bool) -> None:
    body = {"api_key": "k", "events": [http_event(insert_id="a"), http_event(insert_id="b")]}
    path = write(tmp_path / "body.json", BOM + json.dumps(body, indent=2).encode(), gz=gz)
    con, summary = ingest(path, "amplitude")
    assert rejected(con) == []
    assert summary.files[0].rows_loaded == 2


def test_bom_csv_still_loads_with_a_clean_first_column_name(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", BOM + b"user_id,event_type,event_time\nuser-00001,view,1714600000000\n")
    con, summary = ingest(path, "csv")
    assert summary.files[0].rows_loaded == 1
    assert con.execute("select user_id from raw.events").fetchone()[0] == "user-00001"


def test_bom_in_the_middle_of_a_file_is_data_not_dropped(tmp_path: Path) -> None:
    good = json.dumps(export_event())
    path = write(tmp_path / "e.jsonl", (good + "\n").encode() + BOM + json.dumps(export_event(**{"$insert_id": "b"})).encode())
    con, summary = ingest(path, "amplitude-export")
    assert [(row, reason) for row, reason, _, _ in rejected(con)] == [(2, "invalid_json")]
    assert summary.files[0].rows_loaded == 1


# --- 6. A value above the field-size limit is quarantined, the rest of the file loads -----------------


CSV_HEADER = "user_id,event_type,event_time,note"


def test_huge_csv_cell_rejects_only_its_row_with_real_line_numbers(tmp_path: Path) -> None:
    big = "x" * 3_000_000
    text = "\n".join([
        CSV_HEADER,
        'user-00001,view,1714600000000,"a note\nover two lines"',   # lines 2-3: one record
        f"user-00002,view,1714600000000,{big}",                      # line 4
        "user-00003,view,1714600000000,last",                        # line 5
    ]) + "\n"
    con, summary = ingest(write(tmp_path / "big.csv", text.encode()), "csv")
    assert summary.files[0].rejected_by_reason == {"field_too_large": 1}
    assert accounted(summary)
    [(row, reason, detail, payload)] = rejected(con)
    assert (row, reason) == (4, "field_too_large")
    assert "'note'" in detail and "3,000,000 bytes" in detail and "1,048,576" in detail
    assert len(payload) < 10_000 and payload.startswith("user-00002,view,1714600000000,xxx") and "truncated" in payload
    loaded = con.execute("select user_id, source_row, event_properties from raw.events order by 2").fetchall()
    assert [(u, r) for u, r, _ in loaded] == [("user-00001", 2), ("user-00003", 5)]
    assert json.loads(loaded[0][2]) == {"note": "a note\nover two lines"}


def test_field_limit_is_a_parameter(tmp_path: Path) -> None:
    text = f"{CSV_HEADER}\nuser-00001,view,1714600000000,{'y' * 2000}\nuser-00002,view,1714600000000,short\n"
    path = write(tmp_path / "e.csv", text.encode())
    con, summary = ingest(path, "csv", max_field_bytes=1000)
    assert summary.files[0].rejected_by_reason == {"field_too_large": 1}
    assert "2,000 bytes" in rejected(con)[0][2] and "1,000" in rejected(con)[0][2]
    _, summary = ingest(path, "csv")
    assert summary.files[0].rows_loaded == 2


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(("fmt", "make"), [("amplitude", http_event), ("amplitude-export", export_event)])
def test_json_line_above_the_limit_is_quarantined(tmp_path: Path, fmt: str, make, gz: bool) -> None:
    huge = json.dumps(make(insert_id="big", event_properties={"blob": "z" * 3_000_000}, **{"$insert_id": "big"}))
    lines = [json.dumps(make(insert_id="a", **{"$insert_id": "a"})), huge, json.dumps(make(insert_id="b", **{"$insert_id": "b"}))]
    con, summary = ingest(write(tmp_path / "e.jsonl", ("\n".join(lines) + "\n").encode(), gz=gz), fmt)
    assert summary.files[0].rejected_by_reason == {"field_too_large": 1}
    assert summary.files[0].rows_loaded == 2 and accounted(summary)
    [(row, _, detail, payload)] = rejected(con)
    assert row == 2 and "line is 3,000," in detail and "1,048,576" in detail
    assert len(payload) < 10_000 and "truncated" in payload


def test_event_of_a_document_above_the_limit_is_quarantined(tmp_path: Path) -> None:
    body = {"api_key": "SECRET-KEY", "events": [http_event(insert_id="a"),
                                                http_event(insert_id="big", event_properties={"blob": "z" * 5000})]}
    con, summary = ingest(write(tmp_path / "body.json", json.dumps(body, indent=2).encode()), "amplitude",
                          max_field_bytes=4096)
    assert summary.files[0].rejected_by_reason == {"field_too_large": 1}
    assert summary.files[0].rows_loaded == 1
    [(_, _, detail, payload)] = rejected(con)
    assert "event is 5,1" in detail and "truncated" in payload and "SECRET-KEY" not in payload


def test_truncated_body_payload_never_leaks_the_api_key(tmp_path: Path) -> None:
    line = json.dumps({"api_key": "SECRET-KEY-123", "events": [http_event(insert_id=f"e{i}") for i in range(200)]})
    con, summary = ingest(write(tmp_path / "b.jsonl", (line + "\n").encode()), "amplitude", max_field_bytes=4096)
    assert summary.files[0].rejected_by_reason == {"field_too_large": 1}
    assert "SECRET-KEY" not in json.dumps(rejected(con))


def test_cli_max_field_bytes_option(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", f"{CSV_HEADER}\nuser-00001,view,1714600000000,{'y' * 3000}\n".encode())
    warehouse = tmp_path / "w.duckdb"
    result = CliRunner().invoke(main, ["--warehouse", str(warehouse), "ingest", "--format", "csv",
                                       "--max-field-bytes", "2048", str(path)])
    assert result.exit_code == 0, result.output
    assert "field_too_large 1" in result.output
    bad = CliRunner().invoke(main, ["--warehouse", str(warehouse), "ingest", "--format", "csv",
                                    "--max-field-bytes", "0", str(path)])
    assert bad.exit_code == 2 and "--max-field-bytes" in bad.output


def test_cli_default_is_the_library_default() -> None:
    from cohortflow.ingest.reasons import DEFAULT_MAX_FIELD_BYTES

    option = next(p for p in main.commands["ingest"].params if p.name == "max_field_bytes")
    assert option.default == DEFAULT_MAX_FIELD_BYTES == 1024 * 1024


# --- 7. Every field the product reads is type-checked the same way in every format --------------------


# (field, JSON value, CSV cell or None when CSV cannot express it, expected reason or None = loads)
TYPE_CASES = [
    ("user_id", ["abcdef"], None, "invalid_type"),
    ("user_id", {"a": 1}, None, "invalid_type"),
    ("user_id", True, None, "invalid_type"),
    ("user_id", 1.5, None, "invalid_type"),
    ("user_id", 123456, "123456", None),
    ("device_id", ["device-1"], None, "invalid_type"),
    ("event_type", {"a": 1}, None, "invalid_type"),
    ("event_type", 42, None, "invalid_type"),
    ("insert_id", {"x": 1}, None, "invalid_type"),
    ("session_id", "abc", "abc", "invalid_number"),
    ("session_id", [1], None, "invalid_number"),
    ("session_id", 1.5, "1.5", "invalid_number"),
    ("session_id", 1714600000000, "1714600000000", None),
    ("time", [1714600000000], None, "invalid_time"),
    ("time", True, None, "invalid_time"),
    ("revenue", "abc", "abc", "invalid_number"),
    ("revenue", "NaN", "NaN", "invalid_number"),
    ("revenue", "12.50", "12.50", None),
    ("price", "two", "two", "invalid_number"),
    ("price", "inf", "inf", "invalid_number"),
    ("price", [1], None, "invalid_number"),
    ("price", True, None, "invalid_number"),
    ("quantity", "-Infinity", "-Infinity", "invalid_number"),
    ("quantity", {"n": 1}, None, "invalid_number"),
    ("quantity", 2, "2", None),
]
PROPERTY_FIELDS = ("revenue", "price", "quantity")


def _json_event(fmt: str, field: str, value: object, *, in_properties: bool) -> dict:
    make = http_event if fmt == "amplitude" else export_event
    if field == "time":
        field = "time" if fmt == "amplitude" else "event_time"
    if field == "insert_id" and fmt == "amplitude-export":
        field = "$insert_id"
    if in_properties:
        return make(event_properties={field: value})
    return make(**{field: value})


JSON_TYPE_CASES = [(fmt, in_properties, field, value, reason)
                   for fmt in ("amplitude", "amplitude-export") for in_properties in (False, True)
                   for field, value, _, reason in TYPE_CASES if field in PROPERTY_FIELDS or not in_properties]


@pytest.mark.parametrize(("fmt", "in_properties", "field", "value", "reason"), JSON_TYPE_CASES,
                         ids=[f"{fmt}-{'event_properties.' if p else ''}{f}={json.dumps(v)}"
                              for fmt, p, f, v, _ in JSON_TYPE_CASES])
def test_json_field_types(tmp_path: Path, fmt: str, in_properties: bool, field: str, value: object,
                          reason: str | None) -> None:
    bad = _json_event(fmt, field, value, in_properties=in_properties)
    good = json.dumps(_json_event(fmt, "insert_id", "good-1", in_properties=False) | {"$insert_id": "good-1"})
    path = write(tmp_path / "e.jsonl", (good + "\n" + json.dumps(bad) + "\n").encode())
    con, summary = ingest(path, fmt)
    got = [(row, r) for row, r, _, _ in rejected(con)]
    if reason is None:
        assert got == [] and summary.files[0].rows_loaded == 2
    else:
        assert got == [(2, reason)]
        detail = rejected(con)[0][2]
        assert field in detail, detail  # event_time, $insert_id and event_properties.<field> name it too
        assert summary.files[0].rows_loaded == 1


@pytest.mark.parametrize(("field", "value", "cell", "reason"), [c for c in TYPE_CASES if c[2] is not None],
                         ids=[f"{f}={c}" for f, _, c, _ in TYPE_CASES if c is not None])
def test_csv_gives_the_same_verdict_as_json(tmp_path: Path, field: str, value: object, cell: str, reason: str | None) -> None:
    """The same text in a CSV cell is judged like the JSON value: one rule, every format."""
    columns = {"user_id": "user-00001", "event_type": "view_item", "event_time": "1714600000000"}
    columns["time" if field == "time" else field] = cell
    header = ",".join(columns)
    path = write(tmp_path / "e.csv", f"{header}\n{','.join(columns.values())}\n".encode())
    con, summary = ingest(path, "csv")
    got = [r for _, r, _, _ in rejected(con)]
    assert got == ([] if reason is None else [reason])


def test_numeric_string_revenue_keeps_its_text(tmp_path: Path) -> None:
    """Validation only: '12.50' is accepted and stored as the text it was (exact money later)."""
    line = json.dumps(http_event(event_properties={"revenue": "12.50", "price": "6.25"}))
    con, _ = ingest(write(tmp_path / "e.jsonl", (line + "\n").encode()), "amplitude")
    assert json.loads(con.execute("select event_properties from raw.events").fetchone()[0]) == {
        "revenue": "12.50", "price": "6.25"}


def test_integer_user_id_is_stored_as_its_digits(tmp_path: Path) -> None:
    con, _ = ingest(write(tmp_path / "e.jsonl", (json.dumps(http_event(user_id=123456)) + "\n").encode()), "amplitude")
    assert con.execute("select user_id from raw.events").fetchone()[0] == "123456"


def test_identify_with_an_array_user_id_is_rejected(tmp_path: Path) -> None:
    body = {"api_key": "k", "identification": [{"user_id": ["user-00001"], "user_properties": {"plan": "pro"}},
                                               {"user_id": "user-00002", "user_properties": {"plan": "free"}}]}
    con, summary = ingest(write(tmp_path / "b.json", json.dumps(body).encode()), "amplitude")
    assert [r for _, r, _, _ in rejected(con)] == ["invalid_type"]
    assert con.execute("select user_id from raw.users").fetchall() == [("user-00002",)]


# --- 8. An unterminated CSV quote is a malformed row, the other rows load ------------------------------


@pytest.mark.parametrize("ending", ["\n", ""], ids=["newline", "no-newline"])
def test_unterminated_quote_on_the_last_line(tmp_path: Path, ending: str) -> None:
    text = (f"{CSV_HEADER}\nuser-00001,view,1714600000000,ok\nuser-00002,view,1714600000000,\"a, quoted\"\n"
            f"user-00003,view,1714600000000,\"unterminated note{ending}")
    con, summary = ingest(write(tmp_path / "e.csv", text.encode()), "csv")
    assert [(row, reason) for row, reason, _, _ in rejected(con)] == [(4, "malformed_row")]
    detail, payload = rejected(con)[0][2:]
    assert "quote" in detail and payload == 'user-00003,view,1714600000000,"unterminated note'
    loaded = con.execute("select user_id, event_properties from raw.events order by source_row").fetchall()
    assert [(u, json.loads(p)["note"]) for u, p in loaded] == [("user-00001", "ok"), ("user-00002", "a, quoted")]
    assert accounted(summary)


def test_unterminated_quote_mid_file_keeps_the_lines_after_it(tmp_path: Path) -> None:
    text = (f"{CSV_HEADER}\nuser-00001,view,1714600000000,\"unterminated note\n"
            "user-00002,view,1714600000000,ok\nuser-00003,view,1714600000000,\"fine, quoted\"\n"
            "user-00004,view,1714600000000,end\n")
    con, summary = ingest(write(tmp_path / "e.csv", text.encode()), "csv")
    assert [(row, reason) for row, reason, _, _ in rejected(con)] == [(2, "malformed_row")]
    loaded = con.execute("select user_id, source_row from raw.events order by 2").fetchall()
    assert loaded == [("user-00002", 3), ("user-00003", 4), ("user-00004", 5)]


def test_broken_quoting_on_one_line_does_not_change_how_other_lines_are_read(tmp_path: Path) -> None:
    """One bad line must not switch quoting off for the whole file (a good quoted comma stays one value)."""
    text = (f"{CSV_HEADER}\nuser-00001,view,1714600000000,\"a, b\"\n"
            "user-00002,view,1714600000000,\"unterminated note\nuser-00003,view,1714600000000,ok\n")
    con, _ = ingest(write(tmp_path / "e.csv", text.encode()), "csv")
    assert [(row, reason) for row, reason, _, _ in rejected(con)] == [(3, "malformed_row")]
    loaded = con.execute("select source_row, event_properties from raw.events order by 1").fetchall()
    assert [(r, json.loads(p)["note"]) for r, p in loaded] == [(2, "a, b"), (4, "ok")]


def test_quote_garbage_after_a_closed_quote_is_malformed(tmp_path: Path) -> None:
    text = f'{CSV_HEADER}\nuser-00001,view,1714600000000,"closed"garbage\nuser-00002,view,1714600000000,ok\n'
    con, _ = ingest(write(tmp_path / "e.csv", text.encode()), "csv")
    assert [(row, reason) for row, reason, _, _ in rejected(con)] == [(2, "malformed_row")]
    assert con.execute("select user_id from raw.events").fetchall() == [("user-00002",)]


# --- 9. NUL characters: rejected in ids and event_type, removed from other text ----------------------


@pytest.mark.parametrize("field", ["user_id", "device_id", "insert_id", "event_type"])
@pytest.mark.parametrize("fmt", ["amplitude", "amplitude-export"])
def test_nul_in_a_json_key_field_is_rejected(tmp_path: Path, fmt: str, field: str) -> None:
    make = http_event if fmt == "amplitude" else export_event
    key = "$insert_id" if (field == "insert_id" and fmt == "amplitude-export") else field
    bad = make(**{key: "bad\u0000-00001"})
    good = make(user_id="user-00009", insert_id="good", **{"$insert_id": "good"})
    con, summary = ingest(write(tmp_path / "e.jsonl", (json.dumps(good) + "\n" + json.dumps(bad) + "\n").encode()), fmt)
    [(row, reason, detail, _)] = rejected(con)
    assert (row, reason) == (2, "invalid_id") and field in detail and "NUL" in detail
    assert "\x00" not in detail
    assert con.execute("select count(*) from raw.events where contains(coalesce(user_id, '') || coalesce(device_id, '') "
                       "|| coalesce(event_id, '') || event_type, chr(0))").fetchone()[0] == 0
    assert summary.files[0].rows_loaded == 1


def test_nul_in_an_identify_user_id_never_reaches_raw_users(tmp_path: Path) -> None:
    body = {"api_key": "k", "identification": [{"user_id": "user\u0000-00001", "user_properties": {"plan": "pro"}}],
            "events": [http_event(user_id="user\u0000-00002", event_type="$identify")]}
    con, summary = ingest(write(tmp_path / "b.json", json.dumps(body).encode()), "amplitude")
    assert [r for _, r, _, _ in rejected(con)] == ["invalid_id", "invalid_id"]
    assert con.execute("select count(*) from raw.users").fetchone()[0] == 0


@pytest.mark.parametrize("entity", ["events", "users"])
def test_nul_in_a_csv_user_id_never_reaches_the_raw_tables(tmp_path: Path, entity: str) -> None:
    header = "user_id,event_type,event_time" if entity == "events" else "user_id,email"
    rest = ",view,1714600000000" if entity == "events" else ",a@example.com"
    data = f"{header}\nuser-00001{rest}\n".encode() + b"user\x00-00001" + rest.encode() + b"\n"
    con, summary = ingest(write(tmp_path / "e.csv", data), "csv", entity=entity)
    [(row, reason, detail, _)] = rejected(con)
    assert (row, reason) == (3, "invalid_id") and "user_id" in detail
    assert con.execute(f"select user_id from raw.{entity}").fetchall() == [("user-00001",)]


def test_nul_in_an_online_retail_customer_id_is_rejected(tmp_path: Path) -> None:
    header = b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    good = b"536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    bad = b"536366,85123A,HEART,6,2010-12-01 08:26:00,2.55,178\x0051.0,United Kingdom\n"
    con, _ = ingest(write(tmp_path / "r.csv", header + good + bad), "online-retail")
    assert [(row, r) for row, r, _, _ in rejected(con)] == [(3, "invalid_id")]
    assert con.execute("select user_id from raw.users").fetchall() == [("17850",)]


def test_nul_in_other_text_is_removed_in_every_format(tmp_path: Path) -> None:
    line = json.dumps(http_event(event_properties={"note": "a\u0000b", "k\u0000ey": 1},
                                 user_properties={"plan": "p\u0000ro"}))
    con, _ = ingest(write(tmp_path / "e.jsonl", (line + "\n").encode()), "amplitude")
    props, user_props = con.execute("select event_properties, user_properties from raw.events").fetchone()
    assert json.loads(props) == {"note": "ab", "key": 1} and json.loads(user_props) == {"plan": "pro"}
    assert "\\u0000" not in props + user_props

    csv_data = b"user_id,event_type,event_time,note\nuser-00001,view,1714600000000,a\x00b\n"
    con, _ = ingest(write(tmp_path / "e.csv", csv_data), "csv")
    assert json.loads(con.execute("select event_properties from raw.events").fetchone()[0]) == {"note": "ab"}

    items = b"item_id,item_name,category\nsku-1,M\x00ug,kit\x00chen\n"
    con, _ = ingest(write(tmp_path / "i.csv", items), "csv", entity="items")
    assert con.execute("select item_name, category from raw.items").fetchone() == ("Mug", "kitchen")


def test_escaped_backslash_u0000_text_is_not_a_nul(tmp_path: Path) -> None:
    r"""The six characters \u0000 written as text (JSON "\\u0000") are kept: only real NULs go."""
    line = json.dumps(http_event(event_properties={"note": "C:\\u0000"}))
    con, _ = ingest(write(tmp_path / "e.jsonl", (line + "\n").encode()), "amplitude")
    assert json.loads(con.execute("select event_properties from raw.events").fetchone()[0]) == {"note": "C:\\u0000"}


# --- docs ----------------------------------------------------------------------------------------------


def test_docs_describe_the_new_rules() -> None:
    for needed in ("byte-order mark", "--max-field-bytes", "max_field_bytes", "NUL", "unterminated"):
        assert needed in DOC, needed
    for code in ("field_too_large", "invalid_type", "invalid_id"):
        assert code in REASONS


def test_rows_are_accounted_for_in_a_mixed_bad_csv(tmp_path: Path) -> None:
    """Every kind of bad CSV row at once, in a real warehouse file: nothing lost, nothing invented."""
    text = (f"{CSV_HEADER}\n"
            "user-00001,view,1714600000000,ok\n"
            "user-00002,view,1714600000000,too,many\n"
            f"user-00003,view,1714600000000,{'q' * 5000}\n"
            "user-00004,view,1714600000000,\"multi\nline\"\n"
            "user-00005,view,1714600000000,\"bad\"quote\n"
            "user-00006,view,1714600000000,end\n"
            "user-00007,view,1714600000000,\"never closed\n")
    warehouse = connect(tmp_path / "w.duckdb")
    summary = ingest_files(warehouse, [write(tmp_path / "e.csv", text.encode())], "csv", now=NOW, max_field_bytes=4096)
    result = summary.files[0]
    assert (result.rows_read, result.rows_loaded, result.rows_rejected) == (7, 3, 4)
    assert accounted(summary)
    got = warehouse.execute("select source_row, reason from raw.rejected_events order by 1").fetchall()
    assert got == [(3, "malformed_row"), (4, "field_too_large"), (7, "malformed_row"), (9, "malformed_row")]
    assert warehouse.execute("select source_row from raw.events order by 1").fetchall() == [(2,), (5,), (8,)]
    warehouse.close()


def test_csv_small_blocks_give_the_same_result_as_one_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records spanning block ends are carried over: block size changes memory, never the result."""
    monkeypatch.setattr(sources, "_READ_CHUNK", 97)  # else a small file is read, and cut, in one piece
    lines = [CSV_HEADER]
    for i in range(80):
        prefix = f"user-{i:05d},view,1714600000000,"
        lines.append(prefix + (f'"multi\nline {i}"' if i % 7 == 3 else f'"never closed {i}' if i % 13 == 5
                               else "z" * 1500 if i % 17 == 9 else "one,too many" if i % 19 == 2 else f"plain {i}"))
    path = write(tmp_path / "e.csv", ("\n".join(lines) + "\n").encode(), gz=True)
    results = []
    for block_bytes in (64, 300, 4096, 1 << 28):
        con = duckdb.connect()
        summary = ingest_files(con, [path], "csv", now=NOW, block_bytes=block_bytes, max_field_bytes=1000)
        assert accounted(summary)
        results.append((con.execute("select source_row, reason from raw.rejected_events order by 1").fetchall(),
                        con.execute("select source_row, event_properties from raw.events order by 1").fetchall()))
    assert all(r == results[0] for r in results[1:])
    rejected, loaded = results[0]
    assert {reason for _, reason in rejected} == {"malformed_row", "field_too_large"}
    assert json.loads(dict(loaded)[5])["note"] == "multi\nline 3"  # header + 3 rows before it


def test_online_retail_line_that_is_not_a_csv_row_is_counted_and_rejected(tmp_path: Path) -> None:
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    good = "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    path = write(tmp_path / "r.csv", (header + good + good.rstrip("\n") + ",extra\n" + good).encode())
    con, summary = ingest(path, "online-retail")
    result = summary.files[0]
    assert (result.rows_read, result.rows_loaded, result.rejected_by_reason) == (3, 2, {"malformed_row": 1})
    assert [(row, reason) for row, reason, _, _ in rejected(con)] == [(3, "malformed_row")]


@pytest.mark.parametrize("quoting", [csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC],
                         ids=["minimal", "all", "nonnumeric"])
def test_csv_values_and_line_numbers_match_pythons_csv_module(tmp_path: Path, quoting: int) -> None:
    """Whichever way a line is split (plain, every value quoted, mixed, multi-line), values are what
    the csv module reads and source_row is the line the record starts on."""
    rng = random.Random(quoting)
    pieces = ["a", "b c", " padded ", "x,y", 'say "hi"', '"', "line\nbreak", "two\r\nlines", "", "é€😀", "7", "3.5"]
    out = io.StringIO()
    writer = csv.writer(out, quoting=quoting, lineterminator="\n")
    writer.writerow(["user_id", "a", "b", "c"])
    expected = {}
    line = 2
    for i in range(300):
        values = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))) for _ in range(3)]
        user = f"user-{i:05d}"
        writer.writerow([user, *values])
        expected[user] = (line, {k: v for k, v in zip("abc", values) if v})
        line = out.getvalue().count("\n") + 1
    path = write(tmp_path / "users.csv", out.getvalue().encode())
    con, summary = ingest(path, "csv", entity="users")
    assert rejected(con) == [] and summary.files[0].users_loaded == 300
    got = {u: (row, json.loads(props)) for u, row, props in
           con.execute("select user_id, source_row, user_properties from raw.users").fetchall()}
    assert got == expected


def test_a_header_with_an_unterminated_quote_refuses_the_file_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path / "bad_header.csv", b'user_id,"event_type,event_time\nuser-00001,view,1714600000000\n')
    with pytest.raises(IngestError, match=r"bad_header.csv: the header \(line 1\) .*quote in it never closes"):
        ingest(path, "csv")


def test_online_retail_revenue_is_the_exact_product_of_quantity_and_price(tmp_path: Path) -> None:
    # Before: round(quantity * unit_price, 2) in doubles wrote 0.0 for 3 x 0.001 (sub-cent prices exist).
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    rows = ("536365,PADS,PADS TO MATCH ALL CUSHIONS,3,2010-12-01 08:26:00,0.001,17850.0,United Kingdom\n"
            "536366,85123A,WHITE HANGING HEART,6,2010-12-01 08:28:00,2.55,17850.0,United Kingdom\n")
    con, _ = ingest(write(tmp_path / "r.csv", (header + rows).encode()), "online-retail")
    revenue = [r[0] for r in con.execute(
        "select json_extract_string(event_properties, '$.revenue') from raw.events order by source_row").fetchall()]
    assert [Decimal(v) for v in revenue] == [Decimal("0.003"), Decimal("15.3")]
