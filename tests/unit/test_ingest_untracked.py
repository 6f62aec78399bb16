"""Ingest counts what the tracking plan does not know, without rejecting anything.

An event whose event_type the plan does not list, and a property the plan does not list for that event
type, load as usual; ingest reports them in its summary (per file and in total) and writes one row per
file x event type x property to raw.untracked_events (property NULL for an unknown event type).
"""

from __future__ import annotations

import gzip
import json
import textwrap
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.ingest import IngestError, ingest_files
from cohortflow.warehouse import connect

NOW = datetime(2024, 6, 1, 12, 0, 0)

PLAN = """
events:
  view_item:
    description: Item page viewed.
    properties:
      item_id: {type: string, description: The item.}
      price: {type: number, description: Unit price.}
  purchase:
    description: One purchased line.
    properties:
      item_id: {type: string, description: The item.}
"""


def write_plan(path: Path, plan_yaml: str = PLAN) -> Path:
    path.write_text(
        "version: 2\nmodels:\n  - name: tracking_plan\n    config:\n      meta:\n        tracking_plan:\n"
        + textwrap.indent(textwrap.dedent(plan_yaml).strip("\n"), " " * 10) + "\n"
    )
    return path


def event(insert_id: str, event_type: str, when: str, **properties: object) -> str:
    return json.dumps({"$insert_id": insert_id, "user_id": "user-00001", "event_type": event_type,
                       "event_time": when, "event_properties": properties})


def write_gz(path: Path, lines: list[str]) -> Path:
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    warehouse = connect(tmp_path / "warehouse.duckdb")
    yield warehouse
    warehouse.close()


def untracked_rows(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute(
        "select regexp_extract(source_file, '[^/]+$'), event_type, property, events, "
        "strftime(first_event_time, '%d %H:%M'), strftime(last_event_time, '%d %H:%M'), ingested_at "
        "from raw.untracked_events order by 1, 2, 3 nulls first").fetchall()


def test_unknown_event_types_and_properties_are_counted_not_rejected(con: duckdb.DuckDBPyConnection,
                                                                     tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yml")
    lines = [
        event("a1", "view_item", "2024-05-01 10:00:00", item_id="i1", price=5),               # known
        event("a2", "view_item", "2024-05-01 11:00:00", item_id="i1", colour="red"),          # unknown property
        event("a3", "view_item", "2024-05-02 09:00:00", colour="blue", size="M"),             # two unknown properties
        event("a4", "purchase", "2024-05-01 12:00:00", item_id="i1", price=5),                # price: not declared for purchase
        event("a5", "page_view", "2024-05-03 08:00:00", url="/"),                             # unknown event type
        event("a6", "page_view", "2024-05-01 07:00:00"),
        event("a2", "view_item", "2024-05-04 11:00:00", colour="green"),                      # duplicate: not loaded, not counted
        "{not json",                                                                          # rejected: not counted
    ]
    summary = ingest_files(con, [write_gz(tmp_path / "day1.json.gz", lines)], "amplitude-export", now=NOW,
                           tracking_plan=plan)
    result = summary.files[0]
    assert (result.rows_loaded, result.rows_duplicate, result.rows_rejected) == (6, 1, 1)
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 6  # nothing held back
    assert untracked_rows(con) == [
        ("day1.json.gz", "page_view", None, 2, "01 07:00", "03 08:00", NOW),
        ("day1.json.gz", "purchase", "price", 1, "01 12:00", "01 12:00", NOW),
        ("day1.json.gz", "view_item", "colour", 2, "01 11:00", "02 09:00", NOW),
        ("day1.json.gz", "view_item", "size", 1, "02 09:00", "02 09:00", NOW),
    ]
    assert (result.untracked_event_types, result.events_of_untracked_types) == (["page_view"], 2)
    assert result.untracked_properties == [("purchase", "price"), ("view_item", "colour"), ("view_item", "size")]
    assert result.events_with_untracked_properties == 3  # a2, a3, a4 (a3 counted once)
    text = summary.format_text()
    assert "    not in the tracking plan: 1 event type (2 events), 3 properties (3 events)" in text
    assert "page_view" in text and "view_item.colour" in text and "raw.untracked_events" in text


def test_counts_add_up_over_blocks_and_files(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yml")
    first = write_gz(tmp_path / "a.json.gz", [
        event(f"a{i}", "page_view" if i % 2 else "view_item", f"2024-05-01 10:{i:02d}:00", item_id="i", colour="red")
        for i in range(40)])
    second = write_gz(tmp_path / "b.json.gz", [
        event("b1", "page_view", "2024-05-02 10:00:00"),
        event("a1", "page_view", "2024-05-02 10:00:00"),  # a duplicate of a.json.gz's a1: not loaded, not counted
        event("b2", "signup", "2024-05-02 11:00:00")])
    summary = ingest_files(con, [first, second], "amplitude-export", now=NOW, tracking_plan=plan, block_bytes=1024)
    assert summary.files[1].rows_duplicate == 1
    assert untracked_rows(con) == [
        ("a.json.gz", "page_view", None, 20, "01 10:01", "01 10:39", NOW),   # one row per file, whatever the blocks
        ("a.json.gz", "view_item", "colour", 20, "01 10:00", "01 10:38", NOW),
        ("b.json.gz", "page_view", None, 1, "02 10:00", "02 10:00", NOW),
        ("b.json.gz", "signup", None, 1, "02 11:00", "02 11:00", NOW),
    ]
    text = summary.format_text()
    assert "  total: " in text
    assert "    not in the tracking plan: 2 event types (22 events), 1 property (20 events)" in text


def test_without_a_plan_file_ingest_says_so_once_and_counts_nothing(con: duckdb.DuckDBPyConnection,
                                                                    tmp_path: Path) -> None:
    files = [write_gz(tmp_path / f"{n}.json.gz", [event(f"{n}1", "page_view", "2024-05-01 10:00:00")]) for n in "ab"]
    missing = tmp_path / "nowhere" / "tracking_plan.yml"
    summary = ingest_files(con, files, "amplitude-export", now=NOW, tracking_plan=missing)
    assert summary.rows_loaded == 2
    text = summary.format_text()
    assert text.count(f"no tracking plan at {missing}") == 1
    assert "not in the tracking plan:" not in text
    assert con.execute("select count(*) from raw.untracked_events").fetchone()[0] == 0


def test_a_broken_plan_stops_ingest_before_anything_loads(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yml", "events:\n  view_item: {properties: {price: {type: numbr}}}")
    path = write_gz(tmp_path / "a.json.gz", [event("a1", "view_item", "2024-05-01 10:00:00")])
    with pytest.raises(IngestError, match=r"plan\.yml: config\.meta\.tracking_plan\.events\.view_item\.properties"
                                          r"\.price\.type: unknown type 'numbr' \(did you mean 'number'\?\)"):
        ingest_files(con, [path], "amplitude-export", now=NOW, tracking_plan=plan)
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 0


def test_csv_and_online_retail_are_counted_too(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yml")
    orders = tmp_path / "orders.csv"
    orders.write_text("user_id,event_type,event_time,item_id,note\nuser-00001,purchase,2024-05-01 10:00:00,i1,gift\n"
                      "user-00002,purchase,2024-05-01 11:00:00,i2,\n")
    summary = ingest_files(con, [orders], "csv", now=NOW, tracking_plan=plan)
    assert summary.files[0].untracked_properties == [("purchase", "note")]  # an empty cell is no property
    retail = tmp_path / "retail.csv"
    retail.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                      "536365,85123A,WHITE HANGING HEART,6,12/1/2010 8:26,2.55,17850.0,United Kingdom\n")
    summary = ingest_files(con, [retail], "online-retail", now=NOW, tracking_plan=plan)
    assert summary.files[0].untracked_properties == [
        ("purchase", name) for name in ("country", "description", "invoice_no", "order_id", "price", "quantity", "revenue")]


def test_the_shipped_plan_knows_the_generated_events(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """The default plan is the project's: the demo generator's events load without any untracked count."""
    from cohortflow.generate import generate

    generated = generate(tmp_path / "data", users=30, days=5, seed=7, end=datetime(2024, 5, 31))
    summary = ingest_files(con, list(generated.event_paths), "amplitude-export", now=NOW)
    assert summary.rows_loaded > 100
    assert all(not f.untracked for f in summary.files), summary.format_text()
    assert "tracking plan" not in summary.format_text()


def test_cli_option_names_the_plan(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    con.close()
    plan = write_plan(tmp_path / "plan.yml")
    path = write_gz(tmp_path / "a.json.gz", [event("a1", "page_view", "2024-05-01 10:00:00")])
    result = CliRunner().invoke(main, ["--warehouse", str(tmp_path / "warehouse.duckdb"), "ingest", "--format",
                                       "amplitude-export", "--tracking-plan", str(plan), str(path)])
    assert result.exit_code == 0, result.output
    assert "not in the tracking plan: 1 event type (1 event)" in result.output
