"""One test per rejection reason: the bad row is rejected with that reason, its detail names the
field / value, its original payload is kept, and the good rows of the same file still land."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from cohortflow.ingest import REASONS, IngestSummary, ingest_files, parse_mapping_args

NOW = datetime(2024, 6, 1, 12, 0, 0)
GOOD_EXPORT = json.dumps({"$insert_id": "good-1", "user_id": "user-00001", "event_type": "view_item",
                          "event_time": "2024-05-01 10:00:00.000000", "event_properties": {"item_id": "sku-1"}})
RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
RETAIL_GOOD = "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom"


@dataclass(frozen=True)
class Case:
    fmt: str
    bad: str                 # the bad line / row, as written in the file
    detail: str              # a substring the detail must contain (names the field / value)
    good: str | None = GOOD_EXPORT
    header: str | None = None
    entity: str = "events"
    mapping: tuple[str, ...] = ()
    payload: str | None = None  # substring of the stored payload; default: the bad line itself
    gzip: bool = False


def export_line(**fields: object) -> str:
    base = {"$insert_id": "bad-1", "user_id": "user-00002", "event_type": "purchase",
            "event_time": "2024-05-02 10:00:00"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


CASES: dict[str, Case] = {
    "invalid_json": Case("amplitude-export", '{"user_id": "user-00002", "event_type": broken', "not valid JSON"),
    "not_an_object": Case("amplitude-export", '["user-00002", "purchase"]', "expected a JSON object"),
    "malformed_row": Case("csv", "sku-9,Bowl,kitchen,3,true,extra,fields", "TOO MANY COLUMNS",
                          header="item_id,item_name,category,price,is_in_stock", good="sku-1,Mug,kitchen,9.5,true",
                          entity="items"),
    "field_too_large": Case("csv", "sku-9," + "B" * 2_000_000 + ",3", "column 'item_name' is 2,000,000 bytes",
                            header="item_id,item_name,price", good="sku-1,Mug,9.5", entity="items",
                            payload="sku-9,BBBB"),
    "missing_column": Case("csv", "cust-00002,2024-05-01T10:00:00Z", "'CustomerNo'",
                           header="Customer,When", good=None, mapping=("user_id=CustomerNo", "event_time=When",
                                                                       "event_type=:purchase"),
                           payload="cust-00002,2024-05-01T10:00:00Z"),
    "properties_not_object": Case("amplitude-export", export_line(event_properties="sku-1"),
                                  "event_properties is a string"),
    "invalid_type": Case("amplitude-export", export_line(user_id=["user-00002"]), "user_id is an array"),
    "invalid_id": Case("amplitude-export", export_line(user_id="user\u0000-00002"),
                       "user_id 'user\\u0000-00002' contains a NUL character"),
    "missing_customer_id": Case("online-retail", "536366,22752,SET 7 BABUSHKA,2,2010-12-01 08:28:00,7.65,,United Kingdom",
                                "CustomerID", header=RETAIL_HEADER, good=RETAIL_GOOD),
    "missing_event_type": Case("amplitude-export", export_line(event_type="  "), "event_type"),
    "missing_user_and_device_id": Case("amplitude-export", export_line(user_id=None), "user_id and device_id"),
    "id_too_short": Case("amplitude-export", export_line(user_id="u42"), "user_id 'u42'"),
    "missing_user_id": Case("csv", ",ann@example.com", "user_id", header="user_id,email",
                            good="user-00001,bo@example.com", entity="users"),
    "missing_item_id": Case("csv", ",Bowl,3", "item_id", header="item_id,item_name,price", good="sku-1,Mug,9.5",
                            entity="items"),
    "invalid_time": Case("amplitude-export", export_line(event_time="last tuesday"), "event_time 'last tuesday'"),
    "future_time": Case("amplitude-export", export_line(event_time="2024-06-02 12:00:01"), "2024-06-02 12:00:01"),
    "too_old": Case("amplitude-export", export_line(event_time="1999-12-31 23:59:59"), "before 2000-01-01"),
    "invalid_number": Case("amplitude", json.dumps({"user_id": "user-00002", "event_type": "purchase",
                                                    "time": 1714600000000, "price": "twelve"}), "price 'twelve'",
                           good=json.dumps({"user_id": "user-00001", "event_type": "purchase", "time": 1714600000000})),
    "invalid_boolean": Case("csv", "sku-9,Bowl,maybe", "is_in_stock 'maybe'", header="item_id,item_name,is_in_stock",
                            good="sku-1,Mug,yes", entity="items"),
}


def ingest_case(tmp_path: Path, case: Case) -> tuple[duckdb.DuckDBPyConnection, IngestSummary]:
    lines = [line for line in (case.header, case.good, case.bad) if line is not None]
    text = "\n".join(lines) + "\n"
    path = tmp_path / ("input.gz" if case.gzip else "input.txt")
    path.write_bytes(gzip.compress(text.encode()) if case.gzip else text.encode())
    con = duckdb.connect()
    mapping = parse_mapping_args(list(case.mapping)) if case.mapping else None
    summary = ingest_files(con, [path], case.fmt, entity=case.entity, mapping=mapping, now=NOW)
    return con, summary


def test_every_reason_has_a_case() -> None:
    assert set(CASES) == set(REASONS)


@pytest.mark.parametrize("reason", list(CASES))
def test_bad_row_is_rejected_with_its_reason_and_good_rows_land(tmp_path: Path, reason: str) -> None:
    case = CASES[reason]
    con, summary = ingest_case(tmp_path, case)
    rejected = con.execute("select reason, detail, payload, entity from raw.rejected_events").fetchall()
    expected_rejected = 1 if case.good is not None else 1  # missing_column: the file's only row
    assert [r[0] for r in rejected] == [reason] * expected_rejected, rejected
    _, detail, payload, entity = rejected[0]
    assert case.detail in detail
    assert (case.payload or case.bad) in payload
    assert entity == case.entity
    result = summary.files[0]
    assert result.rejected_by_reason == {reason: 1}
    assert result.rows_read == result.rows_loaded + result.rows_duplicate + result.rows_rejected
    if case.good is not None:
        table = {"events": "raw.events", "users": "raw.users", "items": "raw.items"}[case.entity]
        assert con.execute(f"select count(*) from {table}").fetchone()[0] == 1
        assert result.rows_loaded == 1


def test_missing_column_rejects_every_row_of_the_file(tmp_path: Path) -> None:
    case = CASES["missing_column"]
    path = tmp_path / "orders.csv"
    path.write_text("Customer,When\ncust-00001,2024-05-01T10:00:00Z\ncust-00002,2024-05-01T11:00:00Z\n")
    con = duckdb.connect()
    summary = ingest_files(con, [path], "csv", mapping=parse_mapping_args(list(case.mapping)), now=NOW)
    assert summary.files[0].rejected_by_reason == {"missing_column": 2}
    details = {r[0] for r in con.execute("select detail from raw.rejected_events").fetchall()}
    assert len(details) == 1 and "'CustomerNo'" in details.pop()
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 0


def test_future_rule_follows_the_ingest_clock(tmp_path: Path) -> None:
    """23 h ahead of the clock is clock skew and lands; 25 h ahead is rejected."""
    path = tmp_path / "e.jsonl"
    path.write_text(export_line(**{"$insert_id": "a", "event_time": "2024-06-02 11:00:00"}) + "\n"
                    + export_line(**{"$insert_id": "b", "event_time": "2024-06-02 13:00:00"}) + "\n")
    con = duckdb.connect()
    summary = ingest_files(con, [path], "amplitude-export", now=NOW)
    assert summary.files[0].rows_loaded == 1
    assert summary.files[0].rejected_by_reason == {"future_time": 1}


def test_invalid_utf8_line_is_rejected_as_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(GOOD_EXPORT.encode() + b"\n" + b'{"user_id": "\xff\xfe"}\n')
    con = duckdb.connect()
    summary = ingest_files(con, [path], "amplitude-export", now=NOW)
    assert summary.files[0].rejected_by_reason == {"invalid_json": 1}
    detail, payload, row = con.execute("select detail, payload, source_row from raw.rejected_events").fetchone()
    assert "UTF-8" in detail and "\\xff\\xfe" in payload and row == 2
    assert summary.files[0].rows_loaded == 1


def test_api_key_is_never_stored(tmp_path: Path) -> None:
    """Neither loaded nor rejected rows keep the api_key, even from a line that is not valid JSON."""
    path = tmp_path / "bodies.jsonl"
    path.write_text(json.dumps({"api_key": "SECRET-KEY-123", "events": [
        {"user_id": "user-00001", "event_type": "purchase", "time": 1714600000000},
        {"user_id": "u1", "event_type": "purchase", "time": 1714600000000}]}) + "\n"
        + '{"api_key": "SECRET-KEY-123", "events": [\n'
        + json.dumps({"api_key": "SECRET-KEY-123", "events": "not a list"}) + "\n")
    con = duckdb.connect()
    summary = ingest_files(con, [path], "amplitude", now=NOW)
    assert summary.files[0].rows_loaded == 1
    assert summary.files[0].rejected_by_reason == {"id_too_short": 1, "invalid_json": 1, "not_an_object": 1}
    dump = json.dumps(con.execute("select * from raw.rejected_events").fetchall(), default=str)
    dump += json.dumps(con.execute("select * from raw.events").fetchall(), default=str)
    assert "SECRET-KEY-123" not in dump
    assert "SECRET-KEY-123" not in summary.format_text()
