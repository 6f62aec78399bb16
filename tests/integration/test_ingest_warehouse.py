"""Ingest against a real warehouse file: re-ingest, duplicates across files, mixed files, transactions."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from cohortflow.ingest import IngestError, ingest_files
from cohortflow.warehouse import connect

NOW = datetime(2024, 6, 1, 12, 0, 0)


def event(insert_id: str, user: str = "user-00001", when: str = "2024-05-01 10:00:00", **extra: object) -> str:
    return json.dumps({"$insert_id": insert_id, "user_id": user, "event_type": "view_item", "event_time": when,
                       "event_properties": {"item_id": "sku-1"}, **extra})


def write_gz(path: Path, lines: list[str]) -> Path:
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.fixture
def warehouse(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = connect(tmp_path / "warehouse.duckdb")
    yield con
    con.close()


def count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"select count(*) from raw.{table}").fetchone()[0]


def test_reingesting_a_file_adds_nothing(warehouse: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = write_gz(tmp_path / "day1.json.gz", [event("a"), event("b"), "garbage"])
    first = ingest_files(warehouse, [path], "amplitude-export", now=NOW)
    again = ingest_files(warehouse, [path], "amplitude-export", now=NOW)
    assert (first.rows_loaded, first.rows_rejected) == (2, 1)
    result = again.files[0]
    assert result.skipped_as_already_ingested
    assert (result.rows_read, result.rows_loaded, result.rows_rejected) == (0, 0, 0)
    assert (count(warehouse, "events"), count(warehouse, "rejected_events"), count(warehouse, "ingested_files")) == (2, 1, 1)
    assert "skipped, already ingested" in again.format_text()


def test_same_bytes_under_another_name_are_still_skipped(warehouse: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    a = write_gz(tmp_path / "a.json.gz", [event("a")])
    b = tmp_path / "copy-of-a.json.gz"
    b.write_bytes(a.read_bytes())
    summary = ingest_files(warehouse, [a, b], "amplitude-export", now=NOW)
    assert [f.skipped_as_already_ingested for f in summary.files] == [False, True]


def test_duplicate_insert_ids_first_wins(warehouse: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    day1 = write_gz(tmp_path / "day1.json.gz", [event("a", when="2024-05-01 10:00:00"), event("b")])
    # day 2 repeats 'b' (a retry) and repeats 'c' within itself
    day2 = write_gz(tmp_path / "day2.json.gz", [event("b", when="2024-05-02 09:00:00"), event("c"),
                                                event("c", user="user-99999"), event("d")])
    summary = ingest_files(warehouse, [day1, day2], "amplitude-export", now=NOW)
    assert [(f.rows_loaded, f.rows_duplicate) for f in summary.files] == [(2, 0), (2, 2)]
    assert warehouse.execute("select event_id from raw.events order by 1").fetchall() == [("a",), ("b",), ("c",), ("d",)]
    # the first sighting of each id is the one kept
    assert warehouse.execute("select event_time from raw.events where event_id = 'b'").fetchone()[0] == datetime(2024, 5, 1, 10)
    assert warehouse.execute("select user_id from raw.events where event_id = 'c'").fetchone()[0] == "user-00001"
    logged = warehouse.execute("select rows_read, rows_loaded, rows_duplicate from raw.ingested_files order by source_file").fetchall()
    assert logged == [(2, 2, 0), (4, 2, 2)]


def test_events_without_insert_id_are_never_duplicates_of_each_other(warehouse: duckdb.DuckDBPyConnection,
                                                                      tmp_path: Path) -> None:
    same = json.dumps({"user_id": "user-00001", "event_type": "view_item", "time": 1714600000000})
    path = tmp_path / "same.jsonl"
    path.write_text(f"{same}\n{same}\n")
    summary = ingest_files(warehouse, [path], "amplitude", now=NOW)
    assert (summary.rows_loaded, summary.rows_duplicate) == (2, 0)


def test_mixed_file_accounts_for_every_row(warehouse: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    lines = [event("ok-1"), "", "{not json", event("ok-2", user="abc"), event("ok-3", when="1980-01-01 00:00:00"),
             event("ok-1"), event("ok-4"), "[1]", event("ok-5", event_properties=[1])]
    summary = ingest_files(warehouse, [write_gz(tmp_path / "mixed.json.gz", lines)], "amplitude-export", now=NOW)
    result = summary.files[0]
    assert result.rows_read == 8  # the blank line is not a record
    assert (result.rows_loaded, result.rows_duplicate, result.rows_rejected) == (2, 1, 5)
    assert result.rejected_by_reason == {"invalid_json": 1, "id_too_short": 1, "too_old": 1, "not_an_object": 1,
                                         "properties_not_object": 1}
    rejected = warehouse.execute("select source_row, reason, payload from raw.rejected_events order by 1").fetchall()
    assert [(row, reason) for row, reason, _ in rejected] == [
        (3, "invalid_json"), (4, "id_too_short"), (5, "too_old"), (8, "not_an_object"), (9, "properties_not_object")]
    assert rejected[0][2] == "{not json"
    text = summary.format_text()
    assert "8 read, 2 loaded, 1 duplicate, 5 rejected" in text
    assert "invalid_json 1" in text and "raw.rejected_events" in text


def test_a_failing_file_keeps_earlier_files_and_leaves_nothing_of_itself(warehouse: duckdb.DuckDBPyConnection,
                                                                        tmp_path: Path) -> None:
    good = write_gz(tmp_path / "good.json.gz", [event("g1"), event("g2")])
    # Valid gzip for many blocks, then cut off: blocks before the damage have been written when it fails.
    payload = gzip.compress(("\n".join(event(f"t{i}") for i in range(2000)) + "\n").encode())
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(payload[: len(payload) - 40])
    with pytest.raises(IngestError, match="broken.json.gz: gzip data is truncated"):
        ingest_files(warehouse, [good, broken], "amplitude-export", now=NOW, block_bytes=4096)
    assert warehouse.execute("select event_id from raw.events order by 1").fetchall() == [("g1",), ("g2",)]
    assert warehouse.execute("select source_file from raw.ingested_files").fetchall() == [(str(good.resolve()),)]
    assert count(warehouse, "rejected_events") == 0
    # nothing left over either: the connection is usable and holds no temp tables of the failed file
    assert warehouse.execute("select count(*) from duckdb_tables() where temporary").fetchone()[0] == 0
    fixed = write_gz(tmp_path / "fixed.json.gz", [event(f"t{i}") for i in range(3)])
    assert ingest_files(warehouse, [fixed], "amplitude-export", now=NOW).rows_loaded == 3


def test_rows_survive_reopening_the_warehouse(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    con = connect(db)
    ingest_files(con, [write_gz(tmp_path / "e.json.gz", [event("a")])], "amplitude-export", now=NOW)
    con.close()
    con = connect(db, read_only=True)
    assert con.execute("select event_id, ingested_at from raw.events").fetchall() == [("a", NOW)]
    con.close()


def test_aware_clock_is_stored_as_utc(warehouse: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    aware = datetime(2024, 6, 1, 14, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    ingest_files(warehouse, [write_gz(tmp_path / "e.json.gz", [event("a")])], "amplitude-export", now=aware)
    assert warehouse.execute("select ingested_at from raw.events").fetchone()[0] == datetime(2024, 6, 1, 12, 0)
