"""The event endpoint's checks (same verdicts and words as `cohortflow ingest`) and the landing folder:
durable files, ingested once each, whatever crash comes between the steps.

The checks are tested against the ingest itself: every case is checked in Python and ingested by the
SQL of ``cohortflow ingest --format amplitude``, and both must give the same reason and detail.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import orjson
import pytest

from cohortflow.ingest import ingest_files
from cohortflow.ingest import landing
from cohortflow.ingest.landing import (BATCHES_FOLDER, INGESTED_FOLDER, TEMP_PREFIX, events_dir, has_landed,
                                       ingest_landed, landing_dir_for, new_landed_name, write_landed)
from cohortflow.serving.errors import ApiError
from cohortflow.serving.events import (MAX_EVENTS, MAX_LISTED_ERRORS, MAX_PAYLOAD_BYTES, check_events, events_of,
                                       parse_body, rejected_answer)

NOW = datetime(2024, 6, 1, 12, 0, 0)
NOW_MS = int(NOW.replace(tzinfo=timezone.utc).timestamp() * 1000)
T = 1717200000000  # 2024-06-01 00:00:00 UTC
DROP = object()

# name -> changes to a valid event. Every one is checked by both sides.
CASES: dict[str, dict] = {
    "valid": {},
    "spaces_trimmed_then_short": {"user_id": "  abcd  "},
    "nbsp_trimmed_then_short": {"user_id": "\u00a0abcd\u00a0"},
    "newlines_not_trimmed": {"user_id": "\nabcd\n"},
    "tab_not_trimmed": {"user_id": "\tabcd\t"},
    "integer_user_id": {"user_id": 12345},
    "integer_user_id_short": {"user_id": 1234},
    "negative_integer_user_id": {"user_id": -12345},
    "decimal_user_id": {"user_id": 12345.0},
    "boolean_user_id": {"user_id": True},
    "array_user_id": {"user_id": [1, 2]},
    "object_user_id": {"user_id": {"a": "b"}},
    "empty_user_id_with_device": {"user_id": "", "device_id": "dev-12345"},
    "blank_user_id_no_device": {"user_id": "   "},
    "no_ids": {"user_id": None},
    "no_ids_at_all": {"user_id": DROP},
    "short_device_id": {"user_id": None, "device_id": "abc"},
    "short_user_id_good_device": {"user_id": "abc", "device_id": "dev-12345"},
    "good_user_short_device": {"device_id": "abc"},
    "two_accented_chars": {"user_id": "éé"},
    "long_user_id_shown_cut": {"user_id": "u" * 200, "device_id": "abc"},
    "nul_in_user_id": {"user_id": "abc\u0000def"},
    "nul_in_device_id": {"device_id": "abc\u0000def"},
    "blank_event_type": {"event_type": "   "},
    "no_event_type": {"event_type": DROP},
    "null_event_type": {"event_type": None},
    "number_event_type": {"event_type": 5},
    "decimal_event_type": {"event_type": 5.5},
    "array_event_type": {"event_type": ["a"]},
    "tab_event_type": {"event_type": "\t"},
    "nul_in_event_type": {"event_type": "a\u0000"},
    "time_as_text_ms": {"time": "1717200000000"},
    "time_as_text_fraction": {"time": "1717200000000.25"},
    "time_fraction": {"time": T + 0.5},
    "time_exponent": {"time": 1.7172e12},
    "time_iso_z": {"time": "2024-06-01T10:00:00Z"},
    "time_iso_ms": {"time": "2024-06-01T10:00:00.123Z"},
    "time_iso_us": {"time": "2024-06-01T10:00:00.123456+00:00"},
    "time_iso_ns": {"time": "2024-06-01T10:00:00.123456789Z"},
    "time_iso_dot_z": {"time": "2024-06-01T10:00:00.Z"},
    "time_iso_naive": {"time": "2024-06-01 10:00:00"},
    "time_iso_minutes": {"time": "2024-06-01 10:00"},
    "time_iso_offset": {"time": "2024-06-01T10:00:00+02:00"},
    "time_iso_offset_no_colon": {"time": "2024-06-01T10:00:00-0530"},
    "time_iso_offset_hours": {"time": "2024-06-01T10:00:00+02"},
    "time_iso_utc": {"time": "2024-06-01 10:00:00UTC"},
    "time_iso_space_utc": {"time": "2024-06-01 10:00:00 UTC"},
    "time_iso_lower_z": {"time": "2024-06-01T10:00:00z"},
    "time_iso_bad_day": {"time": "2024-02-30T10:00:00Z"},
    "time_date": {"time": "2024-06-01"},
    "time_in_seconds": {"time": 1717200000},
    "time_negative": {"time": -5},
    "time_year_zero": {"time": -62135596800001},
    "time_boolean": {"time": True},
    "time_array": {"time": [1]},
    "time_16_digits": {"time": 1717200000000000},
    "time_15_digits": {"time": 999999999999999},
    "time_padded": {"time": " 1717200000000 "},
    "time_tab_padded": {"time": "\t1717200000000\n"},
    "time_37h_ahead": {"time": T + 37 * 3600 * 1000},
    "time_35h_ahead": {"time": T + 35 * 3600 * 1000},
    "time_word": {"time": "yesterday"},
    "time_before_2000": {"time": "1999-12-31T23:59:59Z"},
    "price_text": {"price": "12.5"},
    "price_word": {"price": "abc"},
    "price_boolean": {"price": True},
    "price_underscore": {"price": "1_000"},
    "price_double_underscore": {"price": "1__0"},
    "price_trailing_underscore": {"price": "1_"},
    "price_inf": {"price": "inf"},
    "price_nan": {"price": "NaN"},
    "price_hex": {"price": "0x10"},
    "price_padded": {"price": " 12 "},
    "price_tab": {"price": "\t12"},
    "price_nbsp": {"price": "\u00a012"},
    "price_exponent": {"price": "1e3"},
    "price_overflow": {"price": "1e400"},
    "price_leading_dot": {"price": ".5"},
    "price_trailing_dot": {"price": "5."},
    "price_plus": {"price": "+5"},
    "price_empty": {"price": ""},
    "price_array": {"price": [1]},
    "price_null": {"price": None},
    "quantity_word": {"quantity": "two"},
    "revenue_object": {"revenue": {"a": 1}},
    "property_price_word": {"event_properties": {"price": "x"}},
    "property_revenue_text": {"event_properties": {"revenue": "5"}},
    "properties_array": {"event_properties": [1]},
    "properties_string": {"event_properties": "abc"},
    "properties_decimal": {"event_properties": 1.5},
    "properties_number": {"event_properties": 3},
    "properties_null": {"event_properties": None},
    "user_properties_string": {"user_properties": "a"},
    "user_properties_boolean": {"user_properties": False},
    "session_decimal": {"session_id": 1.5},
    "session_text": {"session_id": "12"},
    "session_whole_decimal": {"session_id": 12.0},
    "session_exponent_text": {"session_id": "1e3"},
    "session_boolean": {"session_id": False},
    "session_too_big": {"session_id": "12345678901234567890"},
    "session_19_digits": {"session_id": 1234567890123456789},
    "session_fraction_text": {"session_id": "1.5"},
    "session_negative": {"session_id": -1},
    "insert_id_integer": {"insert_id": 123},
    "insert_id_decimal": {"insert_id": 1.5},
    "insert_id_nul": {"insert_id": "a\u0000b"},
    "dollar_insert_id_array": {"$insert_id": [1]},
    "dollar_insert_id_wins": {"$insert_id": "abc", "insert_id": [1]},
    "insert_id_empty": {"insert_id": ""},
    "product_decimal": {"productId": 1.5},
    "product_integer": {"productId": 7},
    "product_boolean": {"productId": False},
    "property_item_array": {"event_properties": {"item_id": [1]}},
    "property_item_decimal": {"event_properties": {"item_id": 2.5}},
    "property_order_boolean": {"event_properties": {"order_id": True}},
    "property_order_nul": {"event_properties": {"order_id": "a\u0000"}},
    "identify": {"event_type": "$identify", "user_properties": {"$set": {"plan": "pro"}}},
    "properties_and_short_id": {"event_properties": [1], "user_id": "ab"},
    "many_problems": {"event_type": None, "user_id": "ab", "time": "x", "price": "y", "session_id": "z"},
    "nested_events_key": {"events": [{"user_id": "zzzzzz", "event_type": "q", "time": 1}]},
    "nested_identification_key": {"identification": [1]},
}
# Accepted by ingest, refused by the endpoint: the endpoint reads ISO-8601 with two-digit months only.
KNOWN_STRICTER = {"time_slashes": {"time": "2024/06/01"}, "time_one_digit_month": {"time": "2024-6-1"}}


def event(name: str, changes: dict) -> dict:
    e = {"user_id": "user-00001", "event_type": "view_item", "time": T, "insert_id": f"ins-{name}"}
    e.update(changes)
    return {k: v for k, v in e.items() if v is not DROP}


def ingest_events(events: list, tmp_path: Path, name: str) -> duckdb.DuckDBPyConnection:
    path = tmp_path / name
    path.write_bytes(orjson.dumps({"events": events}) + b"\n")
    con = duckdb.connect()
    ingest_files(con, [path], "amplitude", now=NOW)
    return con


def test_every_event_gets_the_verdict_and_words_of_cohortflow_ingest(tmp_path: Path) -> None:
    cases = {**CASES, **KNOWN_STRICTER}
    events = [event(name, changes) for name, changes in cases.items()]
    con = ingest_events(events, tmp_path, "cases.json")
    ingest_says = {row: (reason, re.sub(r"^line 1, event \d+: ", "", detail)) for row, reason, detail in
                   con.execute("select source_row, reason, detail from raw.rejected_events").fetchall()}
    landed, differences = [], []
    for row, (name, original) in enumerate(zip(cases, events), 1):
        checked = check_events([copy.deepcopy(original)], NOW_MS)
        endpoint_says = (checked.problems[0][3], checked.problems[0][4]) if checked.problems else None
        expected = ingest_says.get(row)
        if name in KNOWN_STRICTER:
            assert endpoint_says is not None and endpoint_says[0] == "invalid_time" and expected is None, name
            continue
        if endpoint_says != expected:
            differences.append((name, endpoint_says, expected))
        if checked.ok:
            landed.append((row, checked.lines[0]))
    assert differences == []
    # What the endpoint lands (times as epoch ms) ingests to the same rows as what was sent.
    times = dict(con.execute("select source_row, event_time from raw.events").fetchall())
    path = tmp_path / "landed.jsonl"
    path.write_bytes(b"\n".join(line for _, line in landed) + b"\n")
    again = duckdb.connect()
    ingest_files(again, [path], "amplitude", now=NOW)
    assert again.execute("select count(*) from raw.rejected_events").fetchone()[0] == 0
    relanded = dict(again.execute("select source_row, event_time from raw.events").fetchall())
    assert {i: relanded.get(i) for i in range(1, len(landed) + 1)} == {i: times.get(row) for i, (row, _) in enumerate(landed, 1)}


def test_a_missing_time_is_the_upload_time_and_text_times_land_as_milliseconds() -> None:
    events = [event("a", {"time": DROP}), event("b", {"time": None}), event("c", {"time": "2024-06-01T10:00:00.0005Z"}),
              event("d", {"time": "1717200000000"}), event("e", {"events": [], "identification": []})]
    checked = check_events(events, NOW_MS)
    assert checked.ok
    landed = [orjson.loads(line) for line in checked.lines]
    assert [e["time"] for e in landed] == [NOW_MS, NOW_MS, 1717236000000.5, 1717200000000, T]
    assert "events" not in landed[4] and "identification" not in landed[4]


def test_a_400_lists_every_failing_event_by_field_and_index_and_accepts_nothing() -> None:
    events = [event("0", {}), event("1", {"event_type": None}), event("2", {"user_id": "ab"}), 5,
              event("4", {"time": "soon", "user_id": None, "device_id": None}), event("5", {})]
    checked = check_events(events, NOW_MS)
    assert not checked.ok
    error = rejected_answer(checked, len(events))
    assert error.status == 400
    body = error.body
    assert body["code"] == 400 and body["missing_field"] is None
    assert body["events_with_missing_fields"] == {"event_type": [1], "user_id": [4]}
    assert body["events_with_invalid_fields"] == {"user_id": [2], "event": [3], "time": [4]}
    assert [(e["index"], e["reason"]) for e in body["event_errors"]] == [
        (1, "missing_event_type"), (2, "id_too_short"), (3, "not_an_object"), (4, "missing_user_and_device_id")]
    assert body["event_errors"][1]["detail"] == "user_id 'ab' is shorter than 5 characters"
    assert body["event_errors"][2]["detail"] == "expected a JSON object (an event), got '5'"
    assert "4 of 6 events" in body["error"]


def test_a_400_details_at_most_a_hundred_events_but_lists_every_index() -> None:
    events = [event(str(i), {"user_id": "ab"}) for i in range(MAX_EVENTS)]
    body = rejected_answer(check_events(events, NOW_MS), len(events)).body
    assert body["events_with_invalid_fields"] == {"user_id": list(range(MAX_EVENTS))}
    assert len(body["event_errors"]) == MAX_LISTED_ERRORS


def test_min_id_length_option_can_raise_the_minimum_never_lower_it() -> None:
    payload = {"events": [event("a", {"user_id": "abcdef"})], "options": {"min_id_length": 8}}
    events, minimum = events_of(payload)
    assert minimum == 8 and not check_events(events, NOW_MS, min_id_length=minimum).ok
    assert events_of({"events": [event("a", {})], "options": {"min_id_length": 3}})[1] == 5
    for bad in ({"min_id_length": "5"}, {"min_id_length": 0}, {"min_id_length": True}):
        with pytest.raises(ApiError) as caught:
            events_of({"events": [event("a", {})], "options": bad})
        assert caught.value.status == 400
    with pytest.raises(ApiError):
        events_of({"events": [event("a", {})], "options": [1]})


@pytest.mark.parametrize("payload, missing, words", [
    ({}, "events", "missing required field: events"),
    ({"events": None}, "events", "missing required field: events"),
    ({"events": []}, "events", "events is empty"),
    ({"events": {"a": 1}}, None, "events is an object"),
    ({"events": "x"}, None, "events is a string"),
])
def test_request_level_400s_name_the_field(payload: dict, missing: str | None, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        events_of(payload)
    body = caught.value.body
    assert caught.value.status == 400
    assert (body["code"], body["missing_field"]) == (400, missing)
    assert body["events_with_invalid_fields"] == {} and body["events_with_missing_fields"] == {}
    assert words in body["error"]


def test_more_than_2000_events_is_amplitudes_413() -> None:
    assert len(events_of({"events": [event("a", {})] * MAX_EVENTS})[0]) == MAX_EVENTS
    with pytest.raises(ApiError) as caught:
        events_of({"events": [event("a", {})] * (MAX_EVENTS + 1)})
    assert caught.value.status == 413
    assert caught.value.body["code"] == 413 and "2,001" in caught.value.body["error"]


def test_body_parsing_bom_gzip_and_odd_json() -> None:
    body = orjson.dumps({"api_key": "k", "events": [event("a", {})]})
    assert parse_body(b"\xef\xbb\xbf" + body) == (orjson.loads(body), len(body) + 3)
    assert parse_body(gzip.compress(body), "gzip")[0] == orjson.loads(body)
    assert parse_body(b'{"events": [], "events": [1]}')[0] == {"events": [1]}  # the last duplicate key wins
    assert parse_body(b'  {"events": [1]}\n\n')[0] == {"events": [1]}

    def status(raw: bytes, encoding: str | None = None) -> tuple[int, str]:
        with pytest.raises(ApiError) as caught:
            parse_body(raw, encoding)
        return caught.value.status, caught.value.body["error"]

    assert status(b"")[0] == 400 and "Empty request body" in status(b"")[1]
    assert status(b"\xef\xbb\xbf  ")[0] == 400
    assert status(b'{"events": [1]')[0] == 400
    assert status(b'{"events": [1]} trailing')[0] == 400
    assert status(b'{"a": NaN}')[0] == 400
    assert status(b'{"a": "\xff\xfe"}')[0] == 400
    assert type(parse_body(b'{"a": 123456789012345678901234567890}')[0]["a"]) is float  # as DuckDB reads it
    assert status(b"[" * 2000 + b"]" * 2000)[0] == 400
    assert status(b"[1, 2]") == (400, 'The request body is an array; expected a JSON object {"api_key": ..., "events": [...]}')
    assert status(b"null")[0] == 400
    assert status(b"not gzip", "gzip")[0] == 400
    assert status(body, "br")[0] == 415
    bomb = gzip.compress(b'{"events": [' + b" " * (MAX_PAYLOAD_BYTES + 10) + b"]}")
    assert status(bomb, "gzip")[0] == 413
    # No error message carries a path or a stack trace.
    for raw in (b"", b"{", b"[]", b"\x00", b'{"a": 1e999999}'):
        message = status(raw)[1]
        assert "Traceback" not in message and str(Path.cwd()) not in message and "site-packages" not in message


def test_checking_2000_events_is_fast() -> None:
    events = [event(str(i), {"event_properties": {"item_id": f"item-{i}", "price": 9.5}, "session_id": T}) for i in range(2000)]
    started = time.perf_counter()
    checked = check_events(events, NOW_MS)
    assert checked.ok and len(checked.lines) == 2000
    assert time.perf_counter() - started < 0.5  # ~5 ms here; generous for a loaded CI machine


# --- landing -------------------------------------------------------------------------------------


def land(landing_dir: Path, events: list[dict], request: str = "r") -> Path:
    checked = check_events(events, NOW_MS)
    assert checked.ok, checked.problems
    return write_landed(landing_dir, checked.lines, {"id": request, "event_count": len(events)})


def raw_events(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("select event_type, coalesce(insert_id, '-'), user_id from raw.events order by 1, 2, 3").fetchall()


@pytest.fixture
def world(tmp_path: Path) -> tuple[duckdb.DuckDBPyConnection, Path]:
    warehouse = tmp_path / "warehouse" / "w.duckdb"
    warehouse.parent.mkdir()
    con = duckdb.connect(str(warehouse))
    yield con, landing_dir_for(warehouse)
    con.close()


def test_names_sort_in_arrival_order_and_are_unique() -> None:
    names = [new_landed_name(ns) for ns in (1_700_000_000_000_000_000, 1_700_000_000_000_001_000, 1_800_000_000_000_000_000)]
    assert names == sorted(names) and len(set(names)) == 3
    assert names[0].startswith("20231114T221320000000Z-") and names[0].endswith(".jsonl")
    assert new_landed_name(1) != new_landed_name(1)


def test_a_landed_file_is_complete_and_reads_as_an_http_v2_file(tmp_path: Path) -> None:
    path = land(tmp_path, [event("a", {}), event("b", {"event_type": "purchase"})], request="req-1")
    assert path.parent == events_dir(tmp_path)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind
    header, *lines = path.read_bytes().splitlines()
    assert orjson.loads(header) == {"events": [], "cohortflow_request": {"id": "req-1", "event_count": 2}}
    assert len(lines) == 2
    con = duckdb.connect()
    summary = ingest_files(con, [path], "amplitude", now=NOW)  # what `cohortflow ingest --format amplitude` does
    assert (summary.rows_read, summary.rows_loaded, summary.rows_rejected) == (2, 2, 0)


def test_a_landed_file_is_fsynced_under_a_temp_name_then_renamed_and_its_folder_fsynced(tmp_path: Path, monkeypatch) -> None:
    land(tmp_path, [event("warm-up", {})])  # the folders exist now
    steps: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        steps.append("fsync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    def rename(src, dst) -> None:
        steps.append(f"rename {Path(src).name} -> {Path(dst).name}")
        real_rename(src, dst)

    monkeypatch.setattr(landing.os, "fsync", fsync)
    monkeypatch.setattr(landing.os, "rename", rename)
    path = land(tmp_path, [event("a", {})])
    assert steps == [f"fsync {TEMP_PREFIX}{path.name}", f"rename {TEMP_PREFIX}{path.name} -> {path.name}",
                     f"fsync {path.parent.name}"]


def test_landed_events_are_ingested_once_and_archived(world) -> None:
    con, landing_dir = world
    assert not has_landed(landing_dir)
    land(landing_dir, [event("a", {}), event("b", {"insert_id": DROP})])
    land(landing_dir, [event("c", {}), event("d", {"event_type": "$identify", "user_properties": {"plan": "pro"}})])
    assert has_landed(landing_dir)
    result = ingest_landed(con, now=NOW)  # the landing folder beside the warehouse file
    assert (result.requests, len(result.batches), result.rows_read, result.rows_loaded) == (2, 1, 4, 4)
    assert result.batches[0].users_loaded == 1
    assert raw_events(con) == [("view_item", "-", "user-00001"), ("view_item", "ins-a", "user-00001"),
                               ("view_item", "ins-c", "user-00001")]
    folder = events_dir(landing_dir)
    assert not has_landed(landing_dir)
    assert sorted(p.name for p in folder.iterdir()) == [BATCHES_FOLDER, INGESTED_FOLDER]
    assert list((folder / BATCHES_FOLDER).iterdir()) == []
    [archive] = (folder / INGESTED_FOLDER).iterdir()
    assert con.execute("select source_file from raw.events limit 1").fetchone()[0] == str(archive.resolve())
    assert "4 read, 4 loaded, 0 duplicate, 0 rejected (+ 1 users)" in result.format_text()
    again = ingest_landed(con, now=NOW)
    assert again.batches == []
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 3


def test_a_repeated_insert_id_is_ingested_once_across_requests_and_runs(world) -> None:
    con, landing_dir = world
    land(landing_dir, [event("same", {"event_type": "first"})])
    land(landing_dir, [event("same", {"event_type": "second"})])
    result = ingest_landed(con, now=NOW)
    assert (result.rows_loaded, result.rows_duplicate) == (1, 1)
    land(landing_dir, [event("same", {"event_type": "third"})])
    assert ingest_landed(con, now=NOW).rows_duplicate == 1
    assert raw_events(con) == [("first", "ins-same", "user-00001")]  # the first to arrive wins


def test_the_same_events_posted_twice_without_insert_id_are_two_uploads(world) -> None:
    con, landing_dir = world
    same = [event("x", {"insert_id": DROP})]
    land(landing_dir, copy.deepcopy(same), request="same")
    land(landing_dir, copy.deepcopy(same), request="same")
    ingest_landed(con, now=NOW)
    land(landing_dir, copy.deepcopy(same), request="same")
    ingest_landed(con, now=NOW)
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 3  # as Amplitude: no insert_id, no dedupe


def test_a_crash_between_commit_and_clean_up_ingests_nothing_twice(world, monkeypatch) -> None:
    con, landing_dir = world
    land(landing_dir, [event("a", {"insert_id": DROP}), event("b", {"insert_id": DROP})])
    real = landing._remove_batch_folder

    def crash(folder: Path) -> None:
        # Killed half-way through the clean-up: one file gone, the other left.
        next(p for p in folder.iterdir()).unlink()
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(landing, "_remove_batch_folder", crash)
    land(landing_dir, [event("c", {"insert_id": DROP})])
    with pytest.raises(KeyboardInterrupt):
        ingest_landed(con, now=NOW)
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 3  # committed
    monkeypatch.setattr(landing, "_remove_batch_folder", real)
    land(landing_dir, [event("d", {"insert_id": DROP})])
    result = ingest_landed(con, now=NOW)
    assert [(b.recovered, b.already_ingested) for b in result.batches] == [(True, True), (False, False)]
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 4
    assert not has_landed(landing_dir)


def test_a_crash_before_the_commit_ingests_the_batch_on_the_next_call(world, monkeypatch) -> None:
    con, landing_dir = world
    land(landing_dir, [event("a", {"insert_id": DROP})])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed during the ingest")

    monkeypatch.setattr("cohortflow.ingest.loader.ingest_files", crash)
    with pytest.raises(KeyboardInterrupt):
        ingest_landed(con, now=NOW)
    monkeypatch.undo()
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 0
    result = ingest_landed(con, now=NOW)
    assert [b.recovered for b in result.batches] == [True] and result.rows_loaded == 1
    assert ingest_landed(con, now=NOW).batches == []
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 1
    assert len(list((events_dir(landing_dir) / INGESTED_FOLDER).iterdir())) == 1  # rewritten, not duplicated


def test_a_crash_half_way_through_claiming_splits_the_files_without_losing_or_repeating_any(world) -> None:
    con, landing_dir = world
    paths = [land(landing_dir, [event(f"e{i}", {"insert_id": DROP, "event_type": f"t{i}"})]) for i in range(4)]
    batch = events_dir(landing_dir) / BATCHES_FOLDER / "20240601T120000000000Z-crashed"
    batch.mkdir(parents=True)
    for path in paths[:2]:
        os.rename(path, batch / path.name)
    result = ingest_landed(con, now=NOW)
    assert [(b.recovered, b.requests) for b in result.batches] == [(True, 2), (False, 2)]
    assert [r[0] for r in raw_events(con)] == ["t0", "t1", "t2", "t3"]


def test_half_written_files_are_never_ingested_and_stale_ones_are_removed(world) -> None:
    con, landing_dir = world
    folder = events_dir(landing_dir)
    folder.mkdir(parents=True)
    fresh = folder / f"{TEMP_PREFIX}{new_landed_name()}"
    fresh.write_bytes(orjson.dumps(event("half", {}))[:30])
    stale = folder / f"{TEMP_PREFIX}{new_landed_name()}"
    stale.write_bytes(orjson.dumps(event("stale", {})) + b"\n")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert not has_landed(landing_dir)
    result = ingest_landed(con, now=NOW)
    assert result.batches == [] and result.stale_temp_files_removed == 1
    assert fresh.exists() and not stale.exists()
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 0


def test_old_ingested_batches_are_pruned(world) -> None:
    con, landing_dir = world
    land(landing_dir, [event("a", {})])
    ingest_landed(con, now=NOW)
    [archive] = (events_dir(landing_dir) / INGESTED_FOLDER).iterdir()
    os.utime(archive, (time.time() - 8 * 86400, time.time() - 8 * 86400))
    assert ingest_landed(con, now=NOW).ingested_files_pruned == 1
    assert not archive.exists()
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 1


def test_a_large_backlog_is_ingested_in_several_batches(world) -> None:
    con, landing_dir = world
    for i in range(5):
        land(landing_dir, [event(f"{i}-{j}", {}) for j in range(50)])
    result = ingest_landed(con, now=NOW, max_batch_bytes=1)  # at least one request a batch
    assert len(result.batches) == 5 and result.rows_loaded == 250


def test_ingest_landed_opens_and_closes_a_warehouse_file(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    land(landing_dir_for(warehouse), [event("a", {})])
    assert ingest_landed(warehouse, now=NOW).rows_loaded == 1
    con = duckdb.connect(str(warehouse), read_only=True)  # closed: another process could open it
    assert con.execute("select insert_id from raw.events").fetchall() == [("ins-a",)]
    con.close()
    with pytest.raises(ValueError, match="in-memory"):
        ingest_landed(duckdb.connect())
    assert json.loads(json.dumps(ingest_landed(warehouse).as_metadata()))["requests_ingested"] == 0
