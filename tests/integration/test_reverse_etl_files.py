"""File destinations: the file is the audience the mode implies, typed (Parquet) or flat (CSV), written atomically."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from reverse_etl import CsvFileDestination, ParquetFileDestination, SyncSpec, run_sync
from reverse_etl.destinations.files import atomic_write, sha256_file


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    connection.execute("create schema predictions")
    connection.execute(
        "create table predictions.purchase_propensity as select i as user_id, i / 10 as score, "
        "['item' || i, 'item' || (i + 1)] as recommended_items, {'plan': 'pro', 'seats': i} as account "
        "from range(1, 13) t(i)"
    )
    yield connection
    connection.close()


def spec(mode: str) -> SyncSpec:
    return SyncSpec(
        name=f"propensity_{mode}",
        source_relation="predictions.purchase_propensity",
        primary_key=["user_id"],
        mode=mode,
        batch_size=5,
    )


def test_parquet_keeps_types_and_sorts_by_numeric_key(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "propensity.parquet"
    run_sync(con, spec("mirror"), ParquetFileDestination(out))
    table = pq.read_table(out)
    # 1, 2, ..., 12: sorted as numbers, not as text ("10" < "2").
    assert table.column("user_id").to_pylist() == list(range(1, 13))
    assert table.to_pylist()[0] == {"user_id": 1, "score": 0.1, "recommended_items": ["item1", "item2"], "account": {"plan": "pro", "seats": 1}}
    manifest = json.loads(out.with_name("propensity.parquet.manifest.json").read_text())
    assert manifest["format"] == "parquet" and manifest["sha256"] == sha256_file(out) and manifest["row_count"] == 12


def test_csv_writes_nested_values_as_json_text(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "propensity.csv"
    run_sync(con, spec("mirror"), CsvFileDestination(out, write_changes=False))
    with open(out, newline="") as handle:
        first = next(csv.DictReader(handle))
    assert json.loads(first["recommended_items"]) == ["item1", "item2"]
    assert json.loads(first["account"]) == {"plan": "pro", "seats": 1}
    assert not out.with_name("propensity.csv.changes").exists()


def test_upsert_file_keeps_records_that_left_the_source_in_their_last_sent_form(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "propensity.parquet"
    run_sync(con, spec("upsert"), ParquetFileDestination(out))
    con.execute("delete from predictions.purchase_propensity where user_id = 3")
    con.execute("update predictions.purchase_propensity set score = 0.99 where user_id = 4")
    result = run_sync(con, spec("upsert"), ParquetFileDestination(out))
    assert (result.rows_changed, result.rows_removed, result.rows_skipped) == (1, 0, 1)
    rows = {r["user_id"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == list(range(1, 13))  # upsert never removes: user 3 is still there...
    assert rows[3] == {"user_id": 3, "score": 0.3, "recommended_items": ["item3", "item4"], "account": {"plan": "pro", "seats": 3}}
    assert rows[4]["score"] == 0.99


def test_insert_only_file_keeps_old_values_and_update_only_never_adds(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    inserts, updates = tmp_path / "inserts.parquet", tmp_path / "updates.parquet"
    run_sync(con, spec("insert_only"), ParquetFileDestination(inserts))
    run_sync(con, spec("update_only"), ParquetFileDestination(updates))
    assert pq.read_table(updates).num_rows == 0  # update-only sends nothing never sent before
    con.execute("update predictions.purchase_propensity set score = 5 where user_id = 1")
    con.execute("insert into predictions.purchase_propensity values (13, 1.3, ['x'], {'plan': 'free', 'seats': 1})")
    run_sync(con, spec("insert_only"), ParquetFileDestination(inserts))
    by_id = {r["user_id"]: r["score"] for r in pq.read_table(inserts).to_pylist()}
    assert by_id[1] == 0.1 and by_id[13] == 1.3 and len(by_id) == 13


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "a.csv"
    target.write_text("old\n")

    def broken(out) -> None:  # type: ignore[no-untyped-def]
        out.write(b"half of the new")
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError, match="encoder crashed"):
        atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    digest = atomic_write(target, lambda out: out.write(b"new\n"))
    assert target.read_text() == "new\n" and digest == sha256_file(target)


def test_an_emptied_audience_leaves_a_header_only_csv(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "propensity.csv"
    run_sync(con, spec("mirror"), CsvFileDestination(out))
    con.execute("delete from predictions.purchase_propensity")
    result = run_sync(con, spec("mirror"), CsvFileDestination(out))
    assert (result.rows_removed, result.audience_size) == (12, 0)
    assert out.read_text() == '"user_id","score","recommended_items","account"\n'
    assert json.loads(out.with_name("propensity.csv.manifest.json").read_text())["row_count"] == 0


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_mirror_file_equals_the_audience_row_by_row_over_many_runs_of_churn(tmp_path: Path, kind: str) -> None:
    """Twelve runs, each after a random 10 % churn (leaves, value changes, new members, returns with old
    values): after every run the file holds exactly the audience, value for value."""
    import random

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("create schema cohorts")
    con.execute(
        "create table cohorts.vip as select 'u' || lpad(i::varchar, 4, '0') as user_id, i * 1.5 as ltv, "
        "'plan' || (i % 3)::varchar as plan from range(300) t(i)"
    )
    out = tmp_path / f"vip.{kind}"
    destination = CsvFileDestination(out) if kind == "csv" else ParquetFileDestination(out)
    vip = SyncSpec(name=f"vip_{kind}", source_relation="cohorts.vip", primary_key=["user_id"], mode="mirror")
    rng = random.Random(7)
    left: list[tuple[str, float, str]] = []
    next_id = 300
    for run_no in range(12):
        if run_no:
            members = [row[0] for row in con.execute("select user_id from cohorts.vip").fetchall()]
            for user in rng.sample(members, 10):
                left.extend(con.execute("select * from cohorts.vip where user_id = ?", [user]).fetchall())
                con.execute("delete from cohorts.vip where user_id = ?", [user])
            for user in rng.sample([m for m in members if rng.random() < 0.5], 10):
                con.execute("update cohorts.vip set ltv = ltv + 1, plan = 'changed' where user_id = ?", [user])
            for _ in range(8):
                con.execute("insert into cohorts.vip values (?, ?, 'new')", [f"u{next_id:04d}", next_id * 0.5])
                next_id += 1
            for returning in [left.pop(rng.randrange(len(left))) for _ in range(min(4, len(left)))]:
                if not con.execute("select 1 from cohorts.vip where user_id = ?", [returning[0]]).fetchone():
                    con.execute("insert into cohorts.vip values (?, ?, ?)", list(returning))
        result = run_sync(con, vip, destination)
        assert result.succeeded, result.format_text()
        expected = sorted(con.execute("select user_id, ltv, plan from cohorts.vip").fetchall())
        if kind == "csv":
            with open(out, newline="") as handle:
                held = sorted((r["user_id"], float(r["ltv"]), r["plan"]) for r in csv.DictReader(handle))
        else:
            held = sorted(tuple(r.values()) for r in pq.read_table(out).to_pylist())
        assert held == expected, f"run {run_no}: file differs from the audience"
    con.close()
