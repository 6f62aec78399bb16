"""plan_sync on tiny tables in an in-memory DuckDB: the diff a user would see, per mode."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from reverse_etl import (
    InMemoryDestination,
    Operation,
    SourceError,
    SyncSpec,
    plan_sync,
    run_sync,
)


@pytest.fixture
def con(tmp_path) -> Iterator[duckdb.DuckDBPyConnection]:  # type: ignore[no-untyped-def]
    connection = duckdb.connect()
    connection.execute("create schema cohorts")
    connection.execute(
        "create table cohorts.vip (user_id varchar, email varchar, score integer, country varchar)"
    )
    connection.execute(
        "insert into cohorts.vip values ('u1', 'a@x.io', 10, 'JP'), ('u2', 'b@x.io', 20, 'JP'), "
        "('u3', 'c@x.io', 30, 'FR'), ('u4', 'd@x.io', 40, 'DE')"
    )
    yield connection
    connection.close()


def spec(mode: str = "mirror", **overrides: object) -> SyncSpec:
    values: dict[str, object] = {"name": "vip", "source_relation": "cohorts.vip", "primary_key": ["user_id"], "mode": mode}
    values.update(overrides)
    return SyncSpec(**values)  # type: ignore[arg-type]


def sync(con: duckdb.DuckDBPyConnection, s: SyncSpec, destination: InMemoryDestination, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_sync(con, s, destination, lock_dir=tmp_path / "locks")


def churn(con: duckdb.DuckDBPyConnection) -> None:
    """u1 leaves, u2's score changes, u5 joins, u3 / u4 stay as they were."""
    con.execute("delete from cohorts.vip where user_id = 'u1'")
    con.execute("update cohorts.vip set score = 21 where user_id = 'u2'")
    con.execute("insert into cohorts.vip values ('u5', 'e@x.io', 50, 'JP')")


def counts(plan) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    return plan.adds, plan.changes, plan.removes, plan.unchanged


def test_first_plan_adds_the_whole_audience(con: duckdb.DuckDBPyConnection) -> None:
    with plan_sync(con, spec(), destination=InMemoryDestination()) as plan:
        assert counts(plan) == (4, 0, 0, 0)
        batches = list(plan.batches())
    assert [b.operation for b in batches] == [Operation.ADD]
    assert batches[0].keys == ("u1", "u2", "u3", "u4")
    assert batches[0].to_pylist()[0] == {"user_id": "u1", "email": "a@x.io", "score": 10, "country": "JP"}


def test_diff_after_churn_counts_and_samples(con: duckdb.DuckDBPyConnection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sync(con, spec(), InMemoryDestination(), tmp_path)
    churn(con)
    with plan_sync(con, spec(), destination=InMemoryDestination()) as plan:
        assert counts(plan) == (1, 1, 1, 2)
        assert plan.sample_keys(Operation.ADD) == ["u5"]
        assert plan.sample_keys("unchanged") == ["u3", "u4"]
        # A remove carries the values last sent, so a destination deleting by e-mail can do it.
        assert plan.sample(Operation.REMOVE) == [{"user_id": "u1", "email": "a@x.io", "score": 10, "country": "JP"}]
        assert plan.sample(Operation.CHANGE) == [{"user_id": "u2", "email": "b@x.io", "score": 21, "country": "JP"}]
        assert "1 to add, 1 changed, 1 to remove, 2 unchanged" in plan.summary()


@pytest.mark.parametrize(
    ("mode", "sent", "skipped"),
    [
        ("mirror", {"remove": ["u1"], "change": ["u2"], "add": ["u5"]}, 0),
        ("upsert", {"change": ["u2"], "add": ["u5"]}, 1),
        ("insert_only", {"add": ["u5"]}, 2),
        ("update_only", {"change": ["u2"]}, 2),
        ("remove", {"remove": ["u1"]}, 2),
    ],
)
def test_each_mode_sends_its_part_of_the_same_diff(
    con: duckdb.DuckDBPyConnection, tmp_path, mode: str, sent: dict[str, list[str]], skipped: int  # type: ignore[no-untyped-def]
) -> None:
    sync(con, spec(), InMemoryDestination(), tmp_path)
    churn(con)
    with plan_sync(con, spec(mode), destination=InMemoryDestination()) as plan:
        assert counts(plan) == (1, 1, 1, 2)  # the diff does not depend on the mode
        got = {b.operation.value: list(b.keys) for b in plan.batches()}
        assert got == sent
        assert plan.rows_skipped == skipped
        assert plan.rows_to_send == 3 - skipped


def test_removes_are_sent_first_and_batches_hold_one_operation(con: duckdb.DuckDBPyConnection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sync(con, spec(), InMemoryDestination(), tmp_path)
    con.execute("delete from cohorts.vip where user_id in ('u1', 'u2')")
    con.execute("insert into cohorts.vip select 'n' || i, 'n@x.io', i, 'JP' from range(5) t(i)")
    with plan_sync(con, spec(batch_size=2), destination=InMemoryDestination()) as plan:
        shape = [(b.operation.value, len(b), b.sequence) for b in plan.batches()]
    assert shape == [("remove", 2, 1), ("add", 2, 2), ("add", 2, 3), ("add", 1, 4)]


def test_batches_are_cut_from_larger_reads_without_short_batches_in_between(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("insert into cohorts.vip select 'n' || i, 'n@x.io', i, 'JP' from range(7) t(i)")
    with plan_sync(con, spec(), destination=InMemoryDestination()) as plan:
        batches = list(plan.batches(batch_size=2, fetch_size=5))
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2, 1]
    assert [b.sequence for b in batches] == [1, 2, 3, 4, 5, 6]
    keys = [k for b in batches for k in b.keys]
    assert keys == sorted(keys) and len(set(keys)) == 11


def test_full_resync_resends_everything_but_still_removes(con: duckdb.DuckDBPyConnection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sync(con, spec(), InMemoryDestination(), tmp_path)
    con.execute("delete from cohorts.vip where user_id = 'u4'")
    with plan_sync(con, spec(), full_resync=True, destination=InMemoryDestination()) as plan:
        assert counts(plan) == (3, 0, 1, 0)
    with plan_sync(con, spec(), destination=InMemoryDestination()) as plan:
        assert counts(plan) == (0, 0, 1, 3)


def test_only_mapped_fields_count_and_field_order_does_not(con: duckdb.DuckDBPyConnection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mapped = spec(fields={"user_id": "user_id", "email": "email"})
    sync(con, mapped, InMemoryDestination(), tmp_path)
    con.execute("update cohorts.vip set country = 'US'")  # not shipped: not a change
    with plan_sync(con, spec(fields={"email": "email", "user_id": "user_id"}), destination=InMemoryDestination()) as plan:
        assert counts(plan) == (0, 0, 0, 4)
    con.execute("update cohorts.vip set email = upper(email) where user_id = 'u3'")
    with plan_sync(con, mapped, destination=InMemoryDestination()) as plan:
        assert counts(plan) == (0, 1, 0, 3)
    # Renaming a destination field changes what the destination receives: everything changes.
    with plan_sync(con, spec(fields={"user_id": "user_id", "mail": "email"}), destination=InMemoryDestination()) as plan:
        assert counts(plan) == (0, 4, 0, 0)
        assert plan.field_names == ("user_id", "mail")


def test_a_null_becoming_a_value_is_a_change(con: duckdb.DuckDBPyConnection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    con.execute("update cohorts.vip set email = null where user_id = 'u1'")
    sync(con, spec(), InMemoryDestination(), tmp_path)
    con.execute("update cohorts.vip set email = 'a@x.io' where user_id = 'u1'")
    with plan_sync(con, spec(), destination=InMemoryDestination()) as plan:
        assert plan.sample_keys(Operation.CHANGE) == ["u1"]


def test_syncs_of_one_model_keep_separate_state(con: duckdb.DuckDBPyConnection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sync(con, spec(), InMemoryDestination(), tmp_path)
    with plan_sync(con, spec(name="vip_to_crm"), destination=InMemoryDestination()) as plan:
        assert counts(plan) == (4, 0, 0, 0)


def test_composite_key(con: duckdb.DuckDBPyConnection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = spec(primary_key=["country", "user_id"])
    destination = InMemoryDestination()
    sync(con, s, destination, tmp_path)
    assert '["JP","u1"]' in destination.records
    con.execute("update cohorts.vip set country = 'US' where user_id = 'u1'")  # a key change: remove + add
    with plan_sync(con, s, destination=InMemoryDestination()) as plan:
        assert plan.sample_keys(Operation.REMOVE) == ['["JP","u1"]']
        assert plan.sample_keys(Operation.ADD) == ['["US","u1"]']


def test_duplicate_key_is_refused_naming_the_key(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("insert into cohorts.vip values ('u3', 'c2@x.io', 31, 'FR')")
    with pytest.raises(SourceError) as info:
        plan_sync(con, spec(), destination=InMemoryDestination())
    message = str(info.value)
    assert "sync 'vip'" in message and "'cohorts.vip'" in message
    assert "not unique" in message and "'u3' (2 rows)" in message


def test_null_key_is_refused(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("insert into cohorts.vip values (null, 'z@x.io', 1, 'FR')")
    with pytest.raises(SourceError, match=r"sync 'vip': primary key \(user_id\) of 'cohorts.vip' is NULL in 1 row"):
        plan_sync(con, spec(), destination=InMemoryDestination())


def test_missing_relation_is_named_with_close_matches(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(SourceError, match=r"source relation 'cohorts.nope' does not exist"):
        plan_sync(con, spec(source_relation="cohorts.nope"), destination=InMemoryDestination())
    # dbt-duckdb often prefixes schemas (main_cohorts); say where the table really is.
    with pytest.raises(SourceError, match=r"relations with that name: cohorts.vip"):
        plan_sync(con, spec(source_relation="main_cohorts.vip"), destination=InMemoryDestination())


def test_missing_column_names_field_and_column(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(SourceError, match=r"fields\['mail'\] column 'e_mail' is not in 'cohorts.vip'"):
        plan_sync(con, spec(fields={"user_id": "user_id", "mail": "e_mail"}), destination=InMemoryDestination())
    with pytest.raises(SourceError, match=r"primary_key column 'id' is not in"):
        plan_sync(con, spec(primary_key=["id"]), destination=InMemoryDestination())


def test_plan_leaves_no_temp_tables_behind(con: duckdb.DuckDBPyConnection) -> None:
    with plan_sync(con, spec(), destination=InMemoryDestination()):
        pass
    left = con.execute("select count(*) from duckdb_tables() where temporary").fetchone()
    assert left == (0,)
    con.execute("insert into cohorts.vip values ('u3', 'c2@x.io', 31, 'FR')")
    with pytest.raises(SourceError):
        plan_sync(con, spec(), destination=InMemoryDestination())
    assert con.execute("select count(*) from duckdb_tables() where temporary").fetchone() == (0,)
