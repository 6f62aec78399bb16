"""Each format's parser on tiny hand-written files: what lands, with which values."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from cohortflow.ingest import IngestError, ingest_files, load_csv_mapping, parse_mapping_args
from cohortflow.ingest.sources import iter_line_blocks, lines_table
from cohortflow.ingest.sql import time_expr

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
NOW = datetime(2024, 6, 1, 12, 0, 0)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def test_http_body_document_lands_events_identifies_and_revenue_fields(con: duckdb.DuckDBPyConnection) -> None:
    summary = ingest_files(con, [FIXTURES / "http_body.json"], "amplitude", now=NOW)
    result = summary.files[0]
    assert (result.rows_read, result.rows_loaded, result.rows_rejected, result.users_loaded) == (4, 4, 0, 2)
    events = rows(con, "select * from raw.events order by source_row")
    assert [e["event_type"] for e in events] == ["purchase", "view_item"]
    purchase, view = events
    assert json.loads(purchase["event_properties"]) == {"category": "books", "price": 12.5, "quantity": 2,
                                                        "revenue": 25.0, "item_id": "4711"}
    assert purchase["event_time"] == datetime(2024, 6, 1, 10, 0, 0)
    assert (purchase["event_id"], purchase["session_id"], purchase["device_id"]) == ("body-1", 1717235000000, "device-aaaa")
    # properties already present win over top-level fields; numeric item ids become strings
    assert json.loads(view["event_properties"]) == {"item_id": "99", "price": 3}
    assert view["user_id"] is None and view["event_id"] == f"{result.sha256[:16]}:2"
    users = {u["user_id"]: u for u in rows(con, "select * from raw.users")}
    # $set wins over $setOnce; $add cannot be applied to state we do not hold
    assert json.loads(users["user-00002"]["user_properties"]) == {"country": "NL", "email": "bo@example.com"}
    assert users["user-00002"]["updated_at"] == datetime(2024, 6, 1, 10, 2, 0)
    assert json.loads(users["user-00003"]["user_properties"]) == {"plan": "pro"}
    assert users["user-00003"]["updated_at"] == NOW
    assert "secret" not in json.dumps(rows(con, "select * from raw.events"), default=str)


def test_http_json_lines_mix_bodies_and_single_events(con: duckdb.DuckDBPyConnection) -> None:
    summary = ingest_files(con, [FIXTURES / "http_lines.jsonl"], "amplitude", now=NOW)
    assert summary.files[0].rows_loaded == 3
    got = con.execute("select event_id, source_row, event_type from raw.events order by source_row").fetchall()
    assert got == [("l-1", 1, "session_start"), ("l-2", 2, "view_item"), ("l-3", 3, "add_to_cart")]


def test_export_gzip_reads_event_time_insert_id_and_ignores_extra_fields(con: duckdb.DuckDBPyConnection) -> None:
    summary = ingest_files(con, [FIXTURES / "export.json.gz"], "amplitude-export", now=NOW)
    assert summary.files[0].rows_loaded == 2
    first, second = rows(con, "select * from raw.events order by source_row")
    assert first["event_id"] == "exp-1" and first["insert_id"] == "exp-1"
    assert first["event_time"] == datetime(2021, 12, 9, 0, 45, 29, 430000)
    assert json.loads(first["user_properties"]) == {"plan": "free"}
    assert json.loads(first["event_properties"]) == {"item_id": "sku-1", "price": 9.5}
    assert (second["user_id"], second["device_id"], second["session_id"]) == (None, "dev-00002", -1)
    assert second["source_format"] == "amplitude-export" and second["source_row"] == 2


def test_users_csv_without_mapping(con: duckdb.DuckDBPyConnection) -> None:
    summary = ingest_files(con, [FIXTURES / "users.csv"], "csv", entity="users", now=NOW)
    assert summary.files[0].users_loaded == 2
    ann, bo = rows(con, "select * from raw.users order by user_id")
    assert json.loads(ann["user_properties"]) == {
        "email": "  Ann@Example.com ", "phone": "+31612345678", "country": "NL",
        "has_marketing_consent": True, "created_at": "2024-01-02T03:04:05Z"}
    assert ann["updated_at"] == datetime(2024, 1, 2, 3, 4, 5)  # = created_at
    assert json.loads(bo["user_properties"])["has_marketing_consent"] is False
    assert "phone" not in json.loads(bo["user_properties"])  # empty cells are left out
    assert ann["source_row"] == 2  # header is line 1


def test_items_csv_without_mapping(con: duckdb.DuckDBPyConnection) -> None:
    ingest_files(con, [FIXTURES / "items.csv"], "csv", entity="items", now=NOW)
    mug, plate = rows(con, "select * from raw.items order by item_id")
    assert (mug["item_name"], mug["category"], mug["price"], mug["is_in_stock"]) == ("Mug, blue", "kitchen", 9.5, True)
    assert json.loads(mug["item_properties"]) == {"color": "blue"}
    assert (plate["price"], plate["is_in_stock"], plate["updated_at"]) == (3.0, False, NOW)


def test_csv_with_yaml_mapping_reads_local_times_and_semicolons(con: duckdb.DuckDBPyConnection) -> None:
    mapping = load_csv_mapping(FIXTURES / "orders.yml")
    summary = ingest_files(con, [FIXTURES / "orders.csv"], "csv", mapping=mapping, now=NOW)
    assert summary.files[0].rows_loaded == 2
    winter, summer = rows(con, "select * from raw.events order by event_id")
    assert (winter["event_type"], winter["user_id"], winter["event_id"]) == ("purchase", "cust-00001", "A-1")
    assert winter["event_time"] == datetime(2024, 3, 30, 1, 30)       # GMT = UTC
    assert summer["event_time"] == datetime(2024, 5, 1, 11, 0)        # BST = UTC + 1
    assert json.loads(summer["event_properties"]) == {"item_id": "sku;2", "quantity": 1}


def test_csv_args_mapping_with_constant(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("who,at,page\nvisitor-1,1714600000000,/home\n")
    ingest_files(con, [path], "csv", mapping=parse_mapping_args(["device_id=who", "event_time=at",
                                                                 "event_type=:view_page"]), now=NOW)
    got = rows(con, "select device_id, event_type, event_time, event_properties from raw.events")
    assert got == [{"device_id": "visitor-1", "event_type": "view_page", "event_time": datetime(2024, 5, 1, 21, 46, 40),
                    "event_properties": '{"page":"/home"}'}]


def test_online_retail_sample(con: duckdb.DuckDBPyConnection) -> None:
    summary = ingest_files(con, [FIXTURES / "online_retail_sample.csv"], "online-retail", now=NOW)
    result = summary.files[0]
    assert (result.rows_read, result.rows_loaded, result.rows_rejected) == (6, 5, 1)
    assert result.rejected_by_reason == {"missing_customer_id": 1}
    events = {e["event_id"]: e for e in rows(con, "select * from raw.events")}
    # the file repeats a line verbatim: both are real purchases and both load
    assert {"536365-1", "536365-2", "536365-3", "C536379-1", "536381-1"} == set(events)
    first = events["536365-1"]
    assert (first["user_id"], first["event_type"], first["event_time"]) == ("17850", "purchase", datetime(2010, 12, 1, 8, 26))
    assert json.loads(first["event_properties"]) == {
        "item_id": "85123A", "description": "WHITE HANGING HEART T-LIGHT HOLDER", "quantity": 6, "price": 2.55,
        "revenue": 15.3, "order_id": "536365", "invoice_no": "536365", "country": "United Kingdom"}
    cancel = events["C536379-1"]
    assert cancel["event_type"] == "cancel_purchase"
    assert cancel["event_time"] == datetime(2011, 6, 1, 8, 41)  # 09:41 BST
    assert json.loads(cancel["event_properties"])["revenue"] == -2.95
    items = {i["item_id"]: i for i in rows(con, "select * from raw.items")}
    assert items["85123A"]["item_name"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert items["85123A"]["price"] == 2.65  # latest positive price, guest lines included
    assert items["85123A"]["category"] is None
    assert items["POST"]["category"] == items["gift_0001_20"]["category"] == "non_product"
    users = {u["user_id"]: u for u in rows(con, "select * from raw.users")}
    assert set(users) == {"17850", "12583"}
    assert users["17850"]["updated_at"] == datetime(2010, 12, 1, 8, 26)
    assert json.loads(users["12583"]["user_properties"]) == {"country": "France"}


def test_online_retail_without_its_columns_rejects_every_row(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "retail.csv"
    path.write_text("InvoiceNo,StockCode\n1,2\n3,4\n")
    summary = ingest_files(con, [path], "online-retail", now=NOW)
    assert summary.files[0].rejected_by_reason == {"missing_column": 2}
    assert "'Description'" in con.execute("select any_value(detail) from raw.rejected_events").fetchone()[0]


@pytest.mark.parametrize(("value", "tz", "expected"), [
    ("1717236000000", "UTC", datetime(2024, 6, 1, 10, 0)),
    ("2024-06-01T10:00:00Z", "UTC", datetime(2024, 6, 1, 10, 0)),
    ("2024-06-01T12:00:00+02:00", "UTC", datetime(2024, 6, 1, 10, 0)),
    ("2024-06-01 11:00:00", "Europe/London", datetime(2024, 6, 1, 10, 0)),
    ("2024-01-01 10:00:00.250", "Europe/London", datetime(2024, 1, 1, 10, 0, 0, 250000)),
    ("2024-06-01", "UTC", datetime(2024, 6, 1)),
    ("not a time", "UTC", None),
])
def test_time_parsing(value: str, tz: str, expected: datetime | None) -> None:
    got = duckdb.connect().execute(f"select {time_expr('v', timezone=tz)} from (select ?::varchar as v)", [value]).fetchone()[0]
    assert got == expected


def test_lines_keep_their_numbers_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"".join(b'{"n": %d}\n' % i for i in range(1, 101)))
    seen = []
    for first, block in iter_line_blocks(path, block_bytes=64):
        table = lines_table(block, first)
        seen += [(n, json.loads(line)["n"]) for n, line in zip(table["line_no"].to_pylist(), table["line"].to_pylist())]
    assert seen == [(i, i) for i in range(1, 101)]


def test_lines_table_marks_blank_and_invalid_utf8_lines() -> None:
    table = lines_table(b'{"a": 1}\n  \n\xff\xfe\n{"b": 2}', 1).to_pylist()
    assert [r["blank"] for r in table] == [False, True, False, False]
    assert table[2]["bad_utf8"] == "\\xff\\xfe"
    assert table[3]["line"] == '{"b": 2}'


def test_small_blocks_give_the_same_result_as_one_block(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    lines = [json.dumps({"user_id": f"user-{i:05d}", "event_type": "view_item", "time": 1714600000000 + i,
                         "insert_id": f"id-{i % 40}"}) for i in range(100)]
    path.write_text("\n".join(lines) + "\n")
    small, big = duckdb.connect(), duckdb.connect()
    s1 = ingest_files(small, [path], "amplitude", now=NOW, block_bytes=500)
    s2 = ingest_files(big, [path], "amplitude", now=NOW)
    assert (s1.rows_loaded, s1.rows_duplicate) == (s2.rows_loaded, s2.rows_duplicate) == (40, 60)
    q = "select event_id, source_row from raw.events order by 1"
    assert small.execute(q).fetchall() == big.execute(q).fetchall()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fmt": "parquet"}, "unknown format 'parquet'"),
    ({"fmt": "csv", "entity": "orders"}, "unknown entity 'orders'"),
    ({"fmt": "amplitude", "entity": "users"}, "not --entity users"),
    ({"fmt": "amplitude", "mapping": parse_mapping_args(["user_id=A"])}, "only applies to --format csv"),
    ({"fmt": "csv", "entity": "items", "mapping": parse_mapping_args(["entity=users"])}, "conflicts"),
])
def test_unusable_options_raise(tmp_path: Path, kwargs: dict, message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a\n1\n")
    fmt = kwargs.pop("fmt")
    with pytest.raises(IngestError, match=message):
        ingest_files(duckdb.connect(), [path], fmt, **kwargs)


def test_missing_path_is_named_and_nothing_is_loaded(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    shutil.copy(FIXTURES / "items.csv", good)
    con = duckdb.connect()
    with pytest.raises(IngestError, match="nope.csv: no such file"):
        ingest_files(con, [good, tmp_path / "nope.csv"], "csv", entity="items")
    assert con.execute("select count(*) from duckdb_tables() where schema_name = 'raw'").fetchone()[0] == 0


def test_empty_csv_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(IngestError, match="empty.csv: file is empty"):
        ingest_files(duckdb.connect(), [path], "csv")
