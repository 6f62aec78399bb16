"""Uploaded cohorts without a server: checking ids, landing a change whole or not at all, ingesting
landed files exactly once, and building download files only from complete work."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import time
from pathlib import Path

import duckdb
import orjson
import pytest

from cohortflow.ingest.uploaded_cohorts import ingest_uploaded_cohorts
from cohortflow.serving import downloads, uploads
from cohortflow.warehouse import ensure_raw_tables


# --- checking ids ----------------------------------------------------------------------------------


def test_ids_are_checked_collapsed_and_sampled() -> None:
    checked = uploads.check_ids(["u1", "u2", "u1", "", "   ", None, 7, "x" * 256, "tab\tbed", " padded", "u3", "u2"])
    assert checked.valid == ["u1", "u2", "u3"]  # first-seen order, repeats collapsed
    assert (checked.received, checked.invalid, checked.duplicates) == (12, 7, 2)
    assert [s["reason"] for s in checked.invalid_sample] == [
        "empty", "empty", "null", "not a string (int)", "longer than 255 characters",
        "contains a control character", "leading or trailing whitespace",
    ]
    assert checked.invalid_sample[5]["id"] == "tab\\u0009bed"  # shown escaped, never raw
    assert len(checked.invalid_sample[4]["id"]) == 80


def test_the_invalid_sample_is_capped_but_the_count_is_not() -> None:
    checked = uploads.check_ids([""] * 50 + ["ok"])
    assert checked.invalid == 50 and len(checked.invalid_sample) == uploads.INVALID_SAMPLE_SIZE and checked.valid == ["ok"]


@pytest.mark.parametrize("value", ["a" * 255, "user@example.com", "ユーザー", "with space"])
def test_ordinary_ids_are_valid(value: str) -> None:
    assert uploads.id_problem(value) is None


def test_names_and_descriptions_are_plain_text() -> None:
    assert uploads.text_problem("VIP list — Q4") is None
    assert uploads.text_problem("   ") == "must not be blank"
    assert uploads.text_problem("two\nlines") == "must not contain control characters"
    assert uploads.text_problem("two\nlines\tand a tab", multiline=True) is None
    assert uploads.text_problem("nul\x00byte", multiline=True) == "must not contain control characters"
    assert uploads.text_problem("lone \ud800 surrogate") == "must be valid Unicode text"
    assert uploads.id_problem("u\ud800") == "not valid Unicode text"


def test_known_users_are_counted_in_batches() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("create table users (user_id text primary key)")
    db.executemany("insert into users values (?)", [(f"u{i}",) for i in range(100)])
    assert uploads.count_known(db, [f"u{i}" for i in range(50, 150)], batch=7) == 50


# --- cohort ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "prefix"), [
    ("VIP list — Q4", "vip_list_q4_"), ("Électricité ", "electricite_"), ("2024 buyers", "uploaded_2024_buyers_"),
    ("!!!", "uploaded_"), ("a" * 80, "a" * 40 + "_"),
])
def test_new_cohort_ids_are_readable_and_safe(name: str, prefix: str) -> None:
    cohort_id = uploads.new_cohort_id(name)
    assert cohort_id.startswith(prefix) and uploads.COHORT_ID_PATTERN.match(cohort_id)


def test_a_new_cohort_id_is_never_one_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(uploads.secrets, "token_hex", lambda n: next(suffixes))
    assert uploads.new_cohort_id("vip", taken={"vip_aaaaaa"}) == "vip_bbbbbb"


# --- landing -------------------------------------------------------------------------------------


def test_a_change_lands_as_one_complete_file(tmp_path: Path) -> None:
    landed = uploads.land_change(tmp_path, cohort_id="vip_abc123", changes=[("create", ["u1", "u2"])], requested_by="crm",
                                 cohort={"name": "VIP", "description": None, "owner": "crm", "id_type": "BY_USER_ID"})
    document = uploads.read_landed_file(landed.path)
    assert document["changes"] == [{"operation": "create", "ids": ["u1", "u2"]}] and document["requested_by"] == "crm"
    assert uploads.landed_files(tmp_path) == [landed.path]
    assert uploads.is_registered_upload(tmp_path, "vip_abc123")
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left

    later = uploads.land_change(tmp_path, cohort_id="vip_abc123", changes=[("remove", ["u1"]), ("add", ["u3"])], requested_by="crm")
    assert uploads.landed_files(tmp_path) == [landed.path, later.path]  # in the order accepted
    assert not uploads.is_registered_upload(tmp_path, "cart_abandoners_24h")
    assert not uploads.is_registered_upload(tmp_path, "../../etc/passwd")


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(source: str, target: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(uploads.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        uploads.land_change(tmp_path, cohort_id="vip_abc123", changes=[("create", ["u1"])], requested_by="crm",
                            cohort={"name": "VIP", "id_type": "BY_USER_ID"})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert not uploads.is_registered_upload(tmp_path, "vip_abc123")


@pytest.mark.parametrize(("content", "problem"), [
    (b"{not json", "not readable JSON"),
    (b'{"format": "other"}', "not a cohortflow"),
    (json.dumps({"format": uploads.FORMAT, "request_id": "0" * 32, "cohort_id": "vip", "received_at": "2026-01-01T00:00:00Z",
                 "sequence": 1, "requested_by": "k", "changes": [{"operation": "add", "ids": ["ok", ""]}]}).encode(), "invalid id"),
    (json.dumps({"format": uploads.FORMAT, "request_id": "0" * 32, "cohort_id": "vip", "received_at": "2026-01-01T00:00:00Z",
                 "sequence": 1, "requested_by": "k", "changes": [{"operation": "create", "ids": ["ok"]}]}).encode(), "needs the cohort"),
    (json.dumps({"format": uploads.FORMAT, "request_id": "../x", "cohort_id": "vip", "received_at": "2026-01-01T00:00:00Z",
                 "sequence": 1, "requested_by": "k", "changes": [{"operation": "add", "ids": ["ok"]}]}).encode(), "spelling"),
])
def test_a_file_the_api_did_not_write_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(uploads.LandedFileError, match=problem):
        uploads.read_landed_file(path)


# --- ingest ----------------------------------------------------------------------------------------


@pytest.fixture
def warehouse(tmp_path: Path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_raw_tables(con)
    yield con
    con.close()


def _changes(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("select cohort_id, operation, cohort_name, id_count, requested_by from raw.uploaded_cohort_changes "
                       "order by change_sequence, change_id").fetchall()


def test_landed_files_are_ingested_once_in_order(tmp_path: Path, warehouse: duckdb.DuckDBPyConnection) -> None:
    landing = tmp_path / "landing"
    assert ingest_uploaded_cohorts(warehouse, landing).format_text() == "no landed cohort uploads"
    first = uploads.land_change(landing, cohort_id="vip_abc123", changes=[("create", ["u1", "u2"])], requested_by="crm",
                                cohort={"name": "VIP", "description": "d", "owner": "crm-team", "id_type": "BY_USER_ID"})
    uploads.land_change(landing, cohort_id="vip_abc123", changes=[("remove", ["u1"])] + [("add", [f"n{i}"]) for i in range(11)],
                        requested_by="crm")
    summary = ingest_uploaded_cohorts(warehouse, landing)
    assert (summary.files, summary.changes, summary.ids, summary.cohorts) == (2, 13, 14, ["vip_abc123"])
    ingested = _changes(warehouse)
    assert ingested[0] == ("vip_abc123", "create", "VIP", 2, "crm")
    assert [row[1] for row in ingested[1:]] == ["remove"] + ["add"] * 11
    # Change ids sort in the order of the request (zero-padded positions).
    ordered = [r[0] for r in warehouse.execute("select change_id from raw.uploaded_cohort_changes order by change_sequence, change_id").fetchall()]
    assert [c.split(":")[1] for c in ordered[1:]] == [f"{i:04d}" for i in range(12)]
    assert warehouse.execute("select count(*) from raw.uploaded_cohort_change_ids").fetchone()[0] == 14
    assert uploads.landed_files(landing) == []
    assert (landing / "cohorts" / "ingested" / first.path.name).exists()

    # Nothing new: nothing happens. A file put back (a run stopped after its commit) is not loaded twice.
    assert ingest_uploaded_cohorts(warehouse, landing).files == 0
    os.replace(landing / "cohorts" / "ingested" / first.path.name, first.path)
    again = ingest_uploaded_cohorts(warehouse, landing)
    assert (again.files, again.already_ingested) == (0, 1) and len(_changes(warehouse)) == 13


def test_an_unreadable_file_is_set_aside_and_the_rest_loads(tmp_path: Path, warehouse: duckdb.DuckDBPyConnection) -> None:
    landing = tmp_path / "landing"
    uploads.land_change(landing, cohort_id="vip_abc123", changes=[("create", ["u1"])], requested_by="crm",
                        cohort={"name": "VIP", "id_type": "BY_USER_ID"})
    (landing / "cohorts" / "00000000000000000001-broken.json").write_text("{half")
    (landing / "cohorts" / ".tmp-being-written.json").write_text("{half")  # a write in progress: not touched
    summary = ingest_uploaded_cohorts(warehouse, landing)
    assert summary.files == 1 and list(summary.rejected) == ["00000000000000000001-broken.json"]
    assert (landing / "cohorts" / "rejected" / "00000000000000000001-broken.json").exists()
    assert (landing / "cohorts" / ".tmp-being-written.json").exists()
    assert "1 unreadable" in summary.format_text()


def test_a_failed_ingest_loads_nothing_and_keeps_the_files(tmp_path: Path, warehouse: duckdb.DuckDBPyConnection,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    landing = tmp_path / "landing"
    uploads.land_change(landing, cohort_id="vip_abc123", changes=[("create", ["u1"])], requested_by="crm",
                        cohort={"name": "VIP", "id_type": "BY_USER_ID"})
    warehouse.execute("drop table raw.uploaded_cohort_change_ids")
    warehouse.execute("create table raw.uploaded_cohort_change_ids (change_id varchar not null, user_id integer not null)")
    with pytest.raises(duckdb.Error):
        ingest_uploaded_cohorts(warehouse, landing)
    assert _changes(warehouse) == [] and len(uploads.landed_files(landing)) == 1


# --- downloads -------------------------------------------------------------------------------------


def _snapshot(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript("""
        create table users (user_id text primary key, amp_props text, computations text, cohort_ids text);
        create table cohort_members (cohort_id text, user_id text, entered_at text, primary key (cohort_id, user_id));
    """)
    db.executemany("insert into users values (?, ?, ?, '[]')", [
        ("u1", '{"country": "JP", "email": null}', '{"order_count": 3, "platforms_used": ["ios", "web"]}'),
        ("u2", '{"country": "DE", "email": "b@example.com"}', '{"order_count": 0, "platforms_used": []}'),
    ])
    db.executemany("insert into cohort_members values ('vip', ?, '2026-12-01T10:00:00')", [("u2",), ("u1",)])
    db.commit()
    db.close()
    return path


def _wait(jobs: downloads.DownloadJobs, request_id: str) -> dict:
    deadline = time.monotonic() + 10
    while (job := jobs.status(request_id, "crm"))["async_status"] == downloads.IN_PROGRESS:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return job


def _request(fmt: str, keys: tuple[str, ...] | None) -> downloads.DownloadRequest:
    return downloads.DownloadRequest("vip", "VIP", fmt, keys, "crm", {"snapshot_id": "s1", "data_as_of": "2026-12-01T10:00:00Z",
                                                                       "published_at": "2026-12-01T10:05:00Z"})


def test_a_download_is_served_only_once_complete(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path / "snapshot.sqlite")
    assert downloads.property_keys(sqlite3.connect(snapshot)) == ["country", "email", "order_count", "platforms_used"]
    jobs = downloads.DownloadJobs(tmp_path / "exports")
    try:
        job = jobs.submit(_request("csv", ("country", "email", "platforms_used")), sqlite3.connect(snapshot, check_same_thread=False))
        assert jobs.status(job["request_id"], "someone else") is None
        done = _wait(jobs, job["request_id"])
        assert done["async_status"] == downloads.COMPLETED and done["rows"] == 2
        table = list(csv.DictReader(io.StringIO(jobs.file(done).read_text())))
        assert table == [
            {"user_id": "u1", "entered_at": "2026-12-01T10:00:00Z", "country": "JP", "email": "", "platforms_used": '["ios","web"]'},
            {"user_id": "u2", "entered_at": "2026-12-01T10:00:00Z", "country": "DE", "email": "b@example.com", "platforms_used": "[]"},
        ]
        plain = _wait(jobs, jobs.submit(_request("json", None), sqlite3.connect(snapshot, check_same_thread=False))["request_id"])
        assert orjson.loads(jobs.file(plain).read_bytes()) == [
            {"user_id": "u1", "entered_at": "2026-12-01T10:00:00Z"}, {"user_id": "u2", "entered_at": "2026-12-01T10:00:00Z"}]

        # A build that fails leaves no file, not even a partial one, and says so.
        broken = sqlite3.connect(":memory:", check_same_thread=False)
        failed = _wait(jobs, jobs.submit(_request("csv", None), broken)["request_id"])
        assert failed["async_status"] == downloads.FAILED and "error id" in failed["error"] and "sqlite" not in failed["error"]
        assert jobs.file(failed) is None
        assert not [p for p in (tmp_path / "exports").rglob(".tmp-*")]
    finally:
        jobs.shutdown()


def test_a_job_of_a_dead_server_process_reads_as_failed(tmp_path: Path) -> None:
    jobs = downloads.DownloadJobs(tmp_path / "exports")
    try:
        job = {"request_id": "a" * 32, "requested_by": "crm", "async_status": downloads.IN_PROGRESS, "pid": 2 ** 22 + 12345,
               "format": "csv"}
        uploads.write_atomically(tmp_path / "exports" / "cohorts" / f"{'a' * 32}.job.json", orjson.dumps(job))
        assert jobs.status("a" * 32, "crm")["async_status"] == downloads.FAILED
        assert jobs.status("../" + "a" * 29, "crm") is None
    finally:
        jobs.shutdown()
