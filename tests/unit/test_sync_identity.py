"""No sync can read another's state, outbox or history, whatever the names (issue: two syncs with one name leaked).

The reproduction: a second exposure with an existing sync's name, appended to the same YAML file, with
another model, destination and mode. dbt keeps only one of the two, the CLI showed only the second,
and its Parquet file held its own 2 records plus the 100 the first sync had sent. Now the name is
refused at load, naming both places, and the engine keys every row by the sync *and* its destination.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from cohortflow.sync_declarations import DeclarationError, DestinationConfig, load_sync_declarations
from reverse_etl import CsvFileDestination, InMemoryDestination, ParquetFileDestination, SyncSpec, run_sync
from reverse_etl.state import STATE_SCHEMA, sync_identity

T0 = datetime(2026, 3, 1, 12, 0)
CART = "model.cohortflow.cart_abandoners_24h"
VIP = "model.cohortflow.vip_buyers"


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("create schema cohorts")
    connection.execute("create table cohorts.big as select 'u' || lpad(i::varchar, 3, '0') as user_id, i as score from range(100) t(i)")
    connection.execute("create table cohorts.small as select * from (values ('x1', 1), ('x2', 2)) t(user_id, score)")
    yield connection
    connection.close()


def run(con: duckdb.DuckDBPyConnection, spec: SyncSpec, destination, tmp_path: Path, hour: int = 0):  # type: ignore[no-untyped-def]
    return run_sync(con, spec, destination, lock_dir=tmp_path / "locks", now=T0 + timedelta(hours=hour))


def test_the_reported_leak_a_second_sync_of_the_same_name_ships_only_its_own_records(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    first = SyncSpec(name="cart_to_files", source_relation="cohorts.big", primary_key=["user_id"], mode="upsert")
    second = SyncSpec(name="cart_to_files", source_relation="cohorts.small", primary_key=["user_id"], mode="upsert")
    run(con, first, CsvFileDestination(tmp_path / "out" / "cart_to_files.csv"), tmp_path)
    result = run(con, second, ParquetFileDestination(tmp_path / "out" / "cart_to_files.parquet"), tmp_path, 1)
    assert result.rows_added == 2
    assert sorted(pq.read_table(tmp_path / "out" / "cart_to_files.parquet").column("user_id").to_pylist()) == ["x1", "x2"]


def test_two_syncs_that_share_a_name_never_share_state_outbox_or_refusals(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    big, small = InMemoryDestination("crm"), InMemoryDestination("ads")
    spec_big = SyncSpec(name="members", source_relation="cohorts.big", primary_key=["user_id"])
    spec_small = SyncSpec(name="members", source_relation="cohorts.small", primary_key=["user_id"])
    for hour in range(3):  # alternate, with churn in between
        run(con, spec_big, big, tmp_path, 2 * hour)
        run(con, spec_small, small, tmp_path, 2 * hour + 1)
        con.execute("update cohorts.big set score = score + 1 where user_id < 'u010'")
        con.execute("delete from cohorts.small where user_id = 'x2'") if hour == 1 else None
    assert set(big.records) == {f"u{i:03d}" for i in range(100)}
    assert set(small.records) == {"x1"}  # x2 removed: the mirror of 'members' at ads saw only its own sends
    per_identity = dict(con.execute(
        f"select sync_id, list(distinct record_key order by record_key) from {STATE_SCHEMA}.sync_state group by 1"
    ).fetchall())
    assert per_identity[sync_identity("members", small.location)] == ["x1"]
    assert len(per_identity[sync_identity("members", big.location)]) == 100
    # Every record log row belongs to the identity that sent it.
    leaked = con.execute(
        f"select count(*) from {STATE_SCHEMA}.sync_records where sync_id = ? and record_key like 'u%'",
        [sync_identity("members", small.location)],
    ).fetchone()
    assert leaked == (0,)


@pytest.mark.parametrize("names", [("vip", "vip_2"), ("vip_2", "vip"), ("a", "a_b"), ("crm_x", "crm_x_")])
def test_names_that_look_alike_keep_apart_on_one_destination(names: tuple[str, str], con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    one, two = (InMemoryDestination("shared") for _ in range(2))
    run(con, SyncSpec(name=names[0], source_relation="cohorts.big", primary_key=["user_id"]), one, tmp_path)
    result = run(con, SyncSpec(name=names[1], source_relation="cohorts.small", primary_key=["user_id"]), two, tmp_path, 1)
    assert result.rows_added == 2 and set(two.records) == {"x1", "x2"}


def test_a_sync_moved_to_another_receiver_sends_it_everything(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    spec = SyncSpec(name="members", source_relation="cohorts.small", primary_key=["user_id"])
    run(con, spec, InMemoryDestination("staging"), tmp_path)
    production = InMemoryDestination("production")
    # The state said what staging holds: production holds nothing yet, so it gets a first sync.
    assert run(con, spec, production, tmp_path, 1).rows_added == 2 and set(production.records) == {"x1", "x2"}


def test_rows_written_before_identities_are_adopted_by_the_destination_they_went_to(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    spec = SyncSpec(name="members", source_relation="cohorts.small", primary_key=["user_id"])
    api = InMemoryDestination("crm")
    run(con, spec, api, tmp_path)
    # As an earlier version left them: no sync_id anywhere.
    for table in ("sync_state", "sync_runs", "sync_records"):
        con.execute(f"update {STATE_SCHEMA}.{table} set sync_id = null")
    again = run(con, spec, api, tmp_path, 1)
    assert (again.rows_added, again.rows_unchanged) == (0, 2)  # carried on with the diff it had
    assert con.execute(f"select count(*) from {STATE_SCHEMA}.sync_state where sync_id is null").fetchone() == (0,)


# --- at load: a name declared twice, two syncs writing one file ----------------------------------


def _manifest(exposures: dict[str, dict]) -> dict:
    model = {"resource_type": "model", "schema": "cohorts", "columns": {"user_id": {}}}
    unique = {
        "resource_type": "test", "test_metadata": {"name": "unique", "kwargs": {"column_name": "user_id"}},
        "column_name": "user_id", "config": {"enabled": True},
    }
    return {
        "nodes": {
            CART: {**model, "name": "cart_abandoners_24h", "alias": "cart_abandoners_24h"},
            VIP: {**model, "name": "vip_buyers", "alias": "vip_buyers"},
            "test.cohortflow.u1": {**unique, "attached_node": CART, "depends_on": {"nodes": [CART]}},
            "test.cohortflow.u2": {**unique, "attached_node": VIP, "depends_on": {"nodes": [VIP]}},
        },
        "exposures": exposures,
    }


def _exposure(name: str, model: str, destination: str, path: str = "models/syncs/file_syncs.yml") -> dict:
    return {
        "name": name, "original_file_path": path, "depends_on": {"nodes": [model]},
        "config": {"meta": {"sync": {"destination": destination, "primary_key": ["user_id"], "mode": "upsert"}}},
    }


DESTINATIONS = {
    "local_files": DestinationConfig(name="local_files", type="csv", settings={"directory": "out"}),
    "local_parquet": DestinationConfig(name="local_parquet", type="parquet", settings={"directory": "out"}),
}


def test_a_sync_name_declared_twice_in_one_file_is_refused_naming_both_places(tmp_path: Path) -> None:
    syncs = tmp_path / "models" / "syncs"
    syncs.mkdir(parents=True)
    (syncs / "file_syncs.yml").write_text(
        "version: 2\n"
        "exposures:\n"
        "  - name: cart_to_files\n"
        "    type: application\n"
        "    owner: {name: Growth}\n"
        "    depends_on: [ref('cart_abandoners_24h')]\n"
        "    config: {meta: {sync: {destination: local_files, primary_key: [user_id]}}}\n"
        "  - name: cart_to_files\n"
        "    type: application\n"
        "    owner: {name: Growth}\n"
        "    depends_on: [ref('vip_buyers')]\n"
        "    config: {meta: {sync: {destination: local_parquet, primary_key: [user_id], mode: upsert}}}\n"
    )
    # What dbt's manifest holds then: one exposure of that name (the last one).
    manifest = _manifest({"exposure.cohortflow.cart_to_files": _exposure("cart_to_files", VIP, "local_parquet")})
    with pytest.raises(DeclarationError) as info:
        load_sync_declarations(manifest, DESTINATIONS, project_dir=tmp_path, base_dir=tmp_path)
    message = str(info.value)
    assert "'cart_to_files' is declared twice" in message
    assert "models/syncs/file_syncs.yml:3" in message and "models/syncs/file_syncs.yml:8" in message


def test_two_syncs_writing_one_file_are_refused(tmp_path: Path) -> None:
    fixed = {"one_file": DestinationConfig(name="one_file", type="csv", settings={"directory": "out", "filename": "all.csv"})}
    manifest = _manifest({
        "exposure.cohortflow.cart_out": _exposure("cart_out", CART, "one_file"),
        "exposure.cohortflow.vip_out": _exposure("vip_out", VIP, "one_file"),
    })
    with pytest.raises(DeclarationError, match=r"writes .*all\.csv, which sync 'cart_out' .* writes too"):
        load_sync_declarations(manifest, fixed, project_dir=tmp_path, base_dir=tmp_path)
    # The default file name is the sync's own: no clash.
    manifest_default = _manifest({
        "exposure.cohortflow.cart_out": _exposure("cart_out", CART, "local_files"),
        "exposure.cohortflow.vip_out": _exposure("vip_out", VIP, "local_files"),
    })
    assert len(load_sync_declarations(manifest_default, DESTINATIONS, project_dir=tmp_path, base_dir=tmp_path)) == 2
