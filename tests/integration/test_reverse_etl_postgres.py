"""The Postgres table destination against a real PostgreSQL server (the session's `postgres` fixture).

What a user of a Postgres sync relies on: after every run the table holds exactly the audience (row
by row, typed), every mode does what it says, a batch applied twice leaves the same table, a bad
value costs one record rather than the run, a dropped connection fails cleanly and the next run
finishes the job, and the password shows up nowhere.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pytest
from postgres_server import PostgresServer

from reverse_etl import ChangeBatch, RunInfo, Secret, SyncError, SyncSpec, run_sync
from reverse_etl.destinations import destination_class
from reverse_etl.destinations.postgres import PostgresTableDestination
from reverse_etl.errors import BatchRejectedError, DestinationError, TransientDestinationError
from reverse_etl.spec import Operation, SyncMode

PASSWORD = "pw-" + uuid.uuid4().hex  # trust auth accepts it; it must never show up anywhere
COLUMNS = ("user_id", "email", "score", "segment", "visits", "vip", "joined_on", "updated_at", "spend", "tags", "profile")


@pytest.fixture
def pg(postgres: PostgresServer) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(postgres.dsn, autocommit=True)
    conn.execute("set timezone to 'UTC'")
    yield conn
    conn.close()


@pytest.fixture
def schema(pg: psycopg.Connection[Any]) -> Iterator[str]:
    """A schema of its own per test, dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    pg.execute(f"create schema {name}")
    yield name
    pg.execute(f"drop schema {name} cascade")


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    connection.execute("create schema audiences")
    yield connection
    connection.close()


def destination(postgres: PostgresServer, schema: str, table: str = "members", **kwargs: Any) -> PostgresTableDestination:
    return PostgresTableDestination(
        host=postgres.host, port=postgres.port, user=postgres.user, dbname=postgres.dbname,
        password=Secret(PASSWORD), schema=schema, table=table, **kwargs,
    )


def create_audience(con: duckdb.DuckDBPyConnection, ids: list[int]) -> None:
    """An audience of typed columns; values are a function of the id and a per-id version."""
    con.execute("create or replace table audiences.versions (i integer primary key, v integer)")
    con.executemany("insert into audiences.versions values (?, 0)", [[i] for i in ids])
    refresh(con)


def refresh(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        create or replace table audiences.members as
        select 'u' || lpad(i::varchar, 4, '0') as user_id,
               case when i % 7 = 0 then null when i % 11 = 0 then '' else 'user' || i || '+' || v || '@example.com' end as email,
               (i * 1.0 / 3 + v)::double as score,
               (['new', 'active, "loyal"', 'lapsing' || chr(10) || 'soon', 'Zoë 🎉', '\\.', 'back\\slash'])[1 + (i + v) % 6] as segment,
               (i * 1000003 + v)::bigint as visits,
               case when i % 5 = 0 then null else (i + v) % 2 = 0 end as vip,
               date '2025-01-01' + (i % 365)::integer as joined_on,
               timestamp '2026-01-01 00:00:00.123456' + to_seconds(i * 3600 + v) as updated_at,
               (i * 10 + v)::decimal(12, 2) / 4 as spend,
               case when i % 4 = 0 then [] else ['t' || (i % 3), 't' || v] end as tags,
               {'tier': (i + v) % 3, 'note': 'n' || v} as profile
        from audiences.versions
        """
    )


def churn(con: duckdb.DuckDBPyConnection, rng: random.Random, next_id: int) -> int:
    """Some leave, some (also earlier leavers) join, some change; returns the next unused id."""
    current = [r[0] for r in con.execute("select i from audiences.versions order by i").fetchall()]
    for i in rng.sample(current, k=min(len(current), rng.randint(3, 12))):
        con.execute("delete from audiences.versions where i = ?", [i])
    for i in rng.sample(current, k=min(len(current), rng.randint(3, 15))):
        con.execute("update audiences.versions set v = v + 1 where i = ?", [i])
    joiners = list(range(next_id, next_id + rng.randint(2, 12)))
    comeback = [i for i in rng.sample(range(next_id), k=3) if i not in current]
    con.executemany("insert or ignore into audiences.versions values (?, 0)", [[i] for i in joiners + comeback])
    refresh(con)
    return next_id + len(joiners)


def source_rows(con: duckdb.DuckDBPyConnection, relation: str = "audiences.members", columns: tuple[str, ...] = COLUMNS) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in con.execute(f"select {', '.join(columns)} from {relation} order by 1").fetchall()]


def table_rows(pg: psycopg.Connection[Any], schema: str, table: str = "members", columns: tuple[str, ...] = COLUMNS) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in pg.execute(f'select {", ".join(columns)} from {schema}."{table}" order by 1').fetchall()]


def spec(mode: str = "mirror", name: str = "members_pg", batch_size: int = 7, relation: str = "audiences.members") -> SyncSpec:
    return SyncSpec(name=name, source_relation=relation, primary_key=["user_id"], mode=mode, batch_size=batch_size)


def sync(con: duckdb.DuckDBPyConnection, sync_spec: SyncSpec, dest: PostgresTableDestination, tmp_path: Path) -> Any:
    return run_sync(con, sync_spec, dest, lock_dir=tmp_path / "locks")


def test_mirror_keeps_the_table_equal_to_the_audience_over_many_runs(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    rng = random.Random(7)
    create_audience(con, list(range(60)))
    next_id = 60
    first = sync(con, spec(), destination(postgres, schema), tmp_path)
    assert first.rows_added == 60 and first.destination_kind == "postgres"
    assert table_rows(pg, schema) == source_rows(con)
    for run_no in range(8):
        next_id = churn(con, rng, next_id)
        result = sync(con, spec(), destination(postgres, schema), tmp_path)
        assert result.status == "succeeded" and result.rows_rejected == 0
        assert result.rows_added + result.rows_changed + result.rows_removed > 0
        assert table_rows(pg, schema) == source_rows(con), f"after churn run {run_no}"

    # A run with nothing to do touches nothing and the table still matches.
    idle = sync(con, spec(), destination(postgres, schema), tmp_path)
    assert idle.rows_processed == 0
    assert table_rows(pg, schema) == source_rows(con)


def test_the_table_is_created_with_the_key_and_types_and_values_round_trip(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    con.execute(
        r"""
        create table audiences.typed as select * from (values
          ('JP', 1, true, 0.1::double, 1e300::double, 'inf'::double, 1.5::float, 12.50::decimal(10, 2), 127::tinyint,
           2147483647::integer, 9223372036854775807::bigint, 18446744073709551615::ubigint,
           '', 'quote " comma , newline' || chr(10) || 'end', date '2026-03-01', timestamp '2026-03-01 12:34:56.789012',
           timestamptz '2026-03-01 12:00:00+09', time '23:59:59.5', interval 3 day + interval 4 hour,
           '\xDE\xAD'::blob, [1, 2, 3], ['a', null], {'k': 'v', 'n': 1}, map {'x': 1}, uuid '4a8f0b1e-8e2f-4b2a-9a7e-0c1d2e3f4a5b'),
          ('FR', 2, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null,
           null, null, null, null, null, null)
        ) t(country, id, flag, d, big, inf, f, dec, tiny, i32, i64, u64, empty, text, day, ts, tstz, tod, span,
            bytes, ints, strs, obj, dict, uid)
        """
    )
    sync_spec = SyncSpec(name="typed_pg", source_relation="audiences.typed", primary_key=["country", "id"])
    result = sync(con, sync_spec, destination(postgres, schema, table="typed"), tmp_path)
    assert result.rows_added == 2

    types = dict(pg.execute(
        "select column_name, data_type from information_schema.columns where table_schema = %s and table_name = 'typed'", [schema]
    ).fetchall())
    assert types == {
        "country": "text", "id": "integer", "flag": "boolean", "d": "double precision", "big": "double precision",
        "inf": "double precision", "f": "real", "dec": "numeric", "tiny": "smallint", "i32": "integer", "i64": "bigint",
        "u64": "numeric", "empty": "text", "text": "text", "day": "date", "ts": "timestamp without time zone",
        "tstz": "timestamp with time zone", "tod": "time without time zone", "span": "interval", "bytes": "bytea",
        "ints": "jsonb", "strs": "jsonb", "obj": "jsonb", "dict": "jsonb", "uid": "text",
    }
    key = pg.execute(
        "select array_agg(a.attname::text order by a.attname) from pg_index i join pg_attribute a "
        "on a.attrelid = i.indrelid and a.attnum = any(i.indkey) where i.indrelid = %s::regclass and i.indisprimary",
        [f"{schema}.typed"],
    ).fetchone()
    assert key == (["country", "id"],)

    jp = pg.execute(f"select * from {schema}.typed where country = 'JP'").fetchone()
    assert jp == (
        "JP", 1, True, 0.1, 1e300, float("inf"), 1.5, Decimal("12.50"), 127, 2147483647, 9223372036854775807,
        Decimal("18446744073709551615"), "", 'quote " comma , newline\nend', date(2026, 3, 1),
        datetime(2026, 3, 1, 12, 34, 56, 789012), datetime(2026, 3, 1, 3, 0, tzinfo=UTC),
        datetime(2000, 1, 1, 23, 59, 59, 500000).time(), timedelta(days=3, hours=4), b"\xde\xad",
        [1, 2, 3], ["a", None], {"k": "v", "n": 1}, {"x": 1}, "4a8f0b1e-8e2f-4b2a-9a7e-0c1d2e3f4a5b",
    )
    fr = pg.execute(f"select * from {schema}.typed where country = 'FR'").fetchone()
    assert fr is not None and fr[:2] == ("FR", 2) and set(fr[2:]) == {None}  # NULL stays NULL, '' stays ''

    # Changes and removes find their rows by the composite key.
    con.execute("update audiences.typed set text = 'changed', ints = [4] where country = 'JP'")
    con.execute("delete from audiences.typed where country = 'FR'")
    again = sync(con, sync_spec, destination(postgres, schema, table="typed"), tmp_path)
    assert (again.rows_changed, again.rows_removed) == (1, 1)
    assert pg.execute(f"select country, id, text, ints from {schema}.typed").fetchall() == [("JP", 1, "changed", [4])]


def test_upsert_never_removes_and_insert_only_never_touches_a_sent_row(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    create_audience(con, list(range(20)))
    sync(con, spec("upsert", name="up"), destination(postgres, schema, table="up"), tmp_path)
    sync(con, spec("insert_only", name="ins"), destination(postgres, schema, table="ins"), tmp_path)
    before = source_rows(con)

    con.execute("delete from audiences.versions where i in (1, 2)")
    con.execute("update audiences.versions set v = 5 where i in (3, 4)")
    con.execute("insert into audiences.versions values (50, 0), (51, 0)")
    refresh(con)
    after = source_rows(con)
    left = [r for r in before if r[0] in ("u0001", "u0002")]
    joined = [r for r in after if r[0] in ("u0050", "u0051")]

    up = sync(con, spec("upsert", name="up"), destination(postgres, schema, table="up"), tmp_path)
    assert (up.rows_added, up.rows_changed, up.rows_removed, up.rows_skipped) == (2, 2, 0, 2)
    assert table_rows(pg, schema, "up") == sorted(after + left)

    # A row someone else wrote first is not overwritten by insert_only either.
    pg.execute(f"insert into {schema}.ins (user_id, email) values ('u0051', 'theirs@example.com')")
    ins = sync(con, spec("insert_only", name="ins"), destination(postgres, schema, table="ins"), tmp_path)
    assert (ins.rows_added, ins.rows_changed, ins.rows_removed) == (2, 0, 0)
    theirs = tuple(["u0051", "theirs@example.com"] + [None] * (len(COLUMNS) - 2))
    assert table_rows(pg, schema, "ins") == sorted(before + [joined[0], theirs])


def test_update_only_changes_existing_rows_and_remove_only_removes(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    create_audience(con, list(range(20)))
    # Both syncs first ran as mirrors (so the state knows the records), then switched mode.
    sync(con, spec("mirror", name="upd"), destination(postgres, schema, table="upd"), tmp_path)
    sync(con, spec("mirror", name="rem"), destination(postgres, schema, table="rem"), tmp_path)
    before = {r[0]: r for r in source_rows(con)}

    con.execute("delete from audiences.versions where i in (1, 2)")
    con.execute("update audiences.versions set v = 5 where i in (3, 4, 5)")
    con.execute("insert into audiences.versions values (50, 0)")
    refresh(con)
    after = {r[0]: r for r in source_rows(con)}
    pg.execute(f"delete from {schema}.upd where user_id = 'u0005'")  # someone removed it by hand

    upd = sync(con, spec("update_only", name="upd"), destination(postgres, schema, table="upd"), tmp_path)
    assert upd.status == "succeeded" and upd.rows_added == 0 and upd.rows_removed == 0
    expected = dict(before)
    expected.update({k: after[k] for k in ("u0003", "u0004")})  # changed in place
    del expected["u0005"]  # not re-created: update_only never inserts; u0050 not added
    assert table_rows(pg, schema, "upd") == sorted(expected.values())

    rem = sync(con, spec("remove", name="rem"), destination(postgres, schema, table="rem"), tmp_path)
    assert (rem.rows_removed, rem.rows_added, rem.rows_changed) == (2, 0, 0)
    assert table_rows(pg, schema, "rem") == sorted(v for k, v in before.items() if k not in ("u0001", "u0002"))


def run_info(sync_name: str, mode: SyncMode = SyncMode.MIRROR, fields: tuple[str, ...] = ("user_id", "email", "score")) -> RunInfo:
    return RunInfo(sync_name=sync_name, run_id="r-" + uuid.uuid4().hex[:8], mode=mode, full_resync=False,
                   started_at=datetime(2026, 3, 1), fields=fields, primary_key_fields=("user_id",))


def batch(operation: Operation, rows: list[tuple[str, str | None, float | None]], sequence: int = 1, key: str = "") -> ChangeBatch:
    records = pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.string()),
        "email": pa.array([r[1] for r in rows], pa.string()),
        "score": pa.array([r[2] for r in rows], pa.float64()),
    })
    return ChangeBatch(operation=operation, sequence=sequence, keys=tuple(r[0] for r in rows), records=records, idempotency_key=key)


def test_a_batch_applied_twice_leaves_the_same_table_and_is_logged(
    pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer
) -> None:
    dest = destination(postgres, schema)
    run = run_info("replay")
    adds = batch(Operation.ADD, [("a", "a@x.io", 1.0), ("b", None, 2.0), ("c", "c@x.io", None)], 1, "k-add")
    changes = batch(Operation.CHANGE, [("a", "a2@x.io", 1.5)], 2, "k-change")
    removes = batch(Operation.REMOVE, [("b", None, 2.0)], 3, "k-remove")
    cols = ("user_id", "email", "score")
    dest.begin(run)
    try:
        for b, expected in (
            (adds, [("a", "a@x.io", 1.0), ("b", None, 2.0), ("c", "c@x.io", None)]),
            (changes, [("a", "a2@x.io", 1.5), ("b", None, 2.0), ("c", "c@x.io", None)]),
            (removes, [("a", "a2@x.io", 1.5), ("c", "c@x.io", None)]),
        ):
            assert dest.send_batch(run, b) is None
            assert table_rows(pg, schema, columns=cols) == expected
            assert dest.send_batch(run, b) is None  # resent, as after a crash before the mark
            assert table_rows(pg, schema, columns=cols) == expected
        # The first add batch applied again after the later ones is still a plain upsert of its rows.
        assert dest.send_batch(run, adds) is None
        assert table_rows(pg, schema, columns=cols) == [("a", "a@x.io", 1.0), ("b", None, 2.0), ("c", "c@x.io", None)]
        assert dest.reapplied_batches == 4
    finally:
        dest.finish(run, succeeded=True)
    log = pg.execute(
        f"select idempotency_key, operation, records, times_applied, first_run_id = last_run_id from {schema}.members__cohortflow_batches order by 1"
    ).fetchall()
    assert log == [("k-add", "add", 3, 3, True), ("k-change", "change", 1, 2, True), ("k-remove", "remove", 1, 2, True)]


def test_update_only_reports_a_row_missing_from_the_table_as_skipped(
    pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer
) -> None:
    dest = destination(postgres, schema)
    mirror, update_only = run_info("upd_direct"), run_info("upd_direct", SyncMode.UPDATE_ONLY)
    dest.begin(mirror)
    dest.send_batch(mirror, batch(Operation.ADD, [("a", "a@x.io", 1.0), ("b", "b@x.io", 2.0)]))
    dest.finish(mirror, succeeded=True)
    pg.execute(f"delete from {schema}.members where user_id = 'b'")
    dest.begin(update_only)
    try:
        answer = dest.send_batch(update_only, batch(Operation.CHANGE, [("a", "a2@x.io", 1.5), ("b", "b2@x.io", 2.5)]))
    finally:
        dest.finish(update_only, succeeded=True)
    assert answer is not None and dict(answer.skipped) == {"b": f"not in {schema}.members (update_only does not insert)"}
    assert table_rows(pg, schema, columns=("user_id", "email", "score")) == [("a", "a2@x.io", 1.5)]


class CrashAfterCommit(PostgresTableDestination):
    """Commits batch 2 in Postgres, then the process 'dies' before the engine hears back."""

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> Any:
        answer = super().send_batch(run, batch)
        if batch.sequence == 2:
            raise RuntimeError("killed after commit")
        return answer


def test_a_run_that_dies_after_a_commit_is_finished_by_the_next_one(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    create_audience(con, list(range(30)))
    crashing = CrashAfterCommit(host=postgres.host, port=postgres.port, user=postgres.user, dbname=postgres.dbname,
                                schema=schema, table="members")
    with pytest.raises(SyncError, match="killed after commit"):
        sync(con, spec(batch_size=10), crashing, tmp_path)
    assert len(table_rows(pg, schema)) == 20  # batch 2 is in the table but was never acknowledged
    assert con.execute("select count(*) from cohortflow_syncs.sync_state where sync_name = 'members_pg'").fetchone() == (10,)

    retry = sync(con, spec(batch_size=10), destination(postgres, schema), tmp_path)
    assert retry.rows_added == 20  # batch 2 is sent again and must not fail or duplicate
    assert table_rows(pg, schema) == source_rows(con)


def test_an_existing_table_is_checked_before_anything_is_sent(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    con.execute(
        "create table audiences.small as select 'u' || i as user_id, 'e' || i as email, (i * 1.5)::double as score from range(5) t(i)"
    )
    small = SyncSpec(name="small_pg", source_relation="audiences.small", primary_key=["user_id"])

    pg.execute(f"create table {schema}.no_email (user_id text primary key, score double precision)")
    with pytest.raises(DestinationError, match=r"public|no_email") as info:
        sync(con, small, destination(postgres, schema, table="no_email"), tmp_path)
    assert "has no column(s) email" in str(info.value) and f"{schema}.no_email" in str(info.value)

    pg.execute(f"create table {schema}.other_key (id serial primary key, user_id text, email text, score double precision)")
    with pytest.raises(DestinationError, match=r"no primary key or unique index on exactly \(user_id\)"):
        sync(con, small, destination(postgres, schema, table="other_key"), tmp_path)

    pg.execute(f"create table {schema}.needs_more (user_id text primary key, email text, score double precision, owner text not null)")
    with pytest.raises(DestinationError, match=r"owner are NOT NULL without a default"):
        sync(con, small, destination(postgres, schema, table="needs_more"), tmp_path)

    pg.execute(f"create table {schema}.wrong_type (user_id text primary key, email text, score boolean)")
    with pytest.raises(DestinationError, match=r"score is boolean but the sync ships double"):
        sync(con, small, destination(postgres, schema, table="wrong_type"), tmp_path)
    for table in ("no_email", "other_key", "needs_more", "wrong_type"):
        assert pg.execute(f"select count(*) from {schema}.{table}").fetchone() == (0,)

    # A compatible table made by someone else: other column order, wider types, extra columns, a
    # unique index instead of a primary key. It is written as is; the extra column is left alone.
    pg.execute(
        f"create table {schema}.theirs (note text default 'kept', score numeric, email varchar(50), user_id varchar(20) not null unique)"
    )
    result = sync(con, small, destination(postgres, schema, table="theirs"), tmp_path)
    assert result.rows_added == 5
    assert pg.execute(f"select user_id, email, score::float8, note from {schema}.theirs order by 1").fetchall() == [
        (f"u{i}", f"e{i}", i * 1.5, "kept") for i in range(5)
    ]


def test_a_bad_value_rejects_its_batch_and_leaves_the_table_as_it_was(
    pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer
) -> None:
    dest = destination(postgres, schema)
    run = run_info("bad_value")
    dest.begin(run)
    try:
        dest.send_batch(run, batch(Operation.ADD, [("a", "a@x.io", 1.0)], 1))
        with pytest.raises(BatchRejectedError) as info:  # Postgres text cannot hold NUL
            dest.send_batch(run, batch(Operation.ADD, [("b", "b@x.io", 2.0), ("c", "c\x00@x.io", 3.0)], 2))
        assert "22021" in info.value.reason and "c\x00@x.io" not in str(info.value)
        pg.execute(f"alter table {schema}.members add constraint score_ok check (score >= 0)")
        with pytest.raises(BatchRejectedError) as info:
            dest.send_batch(run, batch(Operation.CHANGE, [("a", "a@x.io", -1.0)], 3))
        assert "score_ok" in info.value.reason and "23514" in info.value.reason and "-1" not in info.value.reason
        assert table_rows(pg, schema, columns=("user_id", "email", "score")) == [("a", "a@x.io", 1.0)]
        # The same connection goes on with the next batch.
        dest.send_batch(run, batch(Operation.ADD, [("b", "b@x.io", 2.0)], 4))
        assert table_rows(pg, schema, columns=("user_id", "email", "score")) == [("a", "a@x.io", 1.0), ("b", "b@x.io", 2.0)]
    finally:
        dest.finish(run, succeeded=False)


def test_a_bad_record_is_isolated_and_the_rest_delivered(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    con.execute(
        "create table audiences.small as select 'u' || lpad(i::varchar, 2, '0') as user_id, "
        "case when i = 13 then 'bad' || chr(0) else 'e' || i end as email, (i * 1.5)::double as score from range(40) t(i)"
    )
    small = SyncSpec(name="small_pg", source_relation="audiences.small", primary_key=["user_id"], batch_size=16)
    result = sync(con, small, destination(postgres, schema), tmp_path)
    assert result.status == "succeeded"
    assert (result.rows_added, result.rows_rejected) == (39, 1)
    assert result.rejected_sample[0][0] == "u13" and "22021" in result.rejected_sample[0][1]
    assert [r[0] for r in table_rows(pg, schema, columns=("user_id",))] == [f"u{i:02d}" for i in range(40) if i != 13]

    # Refused for good: not resent while its data is the same; sent once the model fixes it.
    assert sync(con, small, destination(postgres, schema), tmp_path).rows_processed == 0
    con.execute("update audiences.small set email = 'e13' where user_id = 'u13'")
    fixed = sync(con, small, destination(postgres, schema), tmp_path)
    assert (fixed.rows_added, fixed.rows_rejected) == (1, 0)
    assert table_rows(pg, schema, "members", ("user_id", "email", "score")) == source_rows(con, "audiences.small", ("user_id", "email", "score"))


def test_a_dropped_connection_is_transient_and_the_next_run_finishes(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    create_audience(con, list(range(30)))

    class DroppedAfterFirstBatch(PostgresTableDestination):
        def send_batch(self, run: RunInfo, batch: ChangeBatch) -> Any:
            if batch.sequence == 2:  # the server goes away (failover, idle timeout...)
                pg.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'cohortflow-sync'")
            return super().send_batch(run, batch)

    dropped = DroppedAfterFirstBatch(host=postgres.host, port=postgres.port, user=postgres.user, dbname=postgres.dbname,
                                     password=Secret(PASSWORD), schema=schema, table="members")
    with pytest.raises(TransientDestinationError) as info:
        sync(con, spec(batch_size=10), dropped, tmp_path)
    assert "batch 2" in str(info.value) and PASSWORD not in str(info.value)
    assert len(table_rows(pg, schema)) == 10
    assert con.execute("select count(*) from cohortflow_syncs.sync_state where sync_name = 'members_pg'").fetchone() == (10,)

    retry = sync(con, spec(batch_size=10), destination(postgres, schema), tmp_path)
    assert retry.rows_added == 20
    assert table_rows(pg, schema) == source_rows(con)


def test_check_names_host_database_and_table_and_what_is_missing(
    pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer
) -> None:
    role = "reader_" + uuid.uuid4().hex[:8]
    pg.execute(f"create role {role} login")
    pg.execute(f"create table {schema}.members (user_id text primary key)")
    pg.execute(f"grant usage on schema {schema} to {role}")
    pg.execute(f"grant select on {schema}.members to {role}")
    try:
        reader = PostgresTableDestination(host=postgres.host, port=postgres.port, user=role, dbname=postgres.dbname,
                                          password=Secret(PASSWORD), schema=schema, table="members")
        with pytest.raises(DestinationError) as info:
            reader.check()
        message = str(info.value)
        assert f"{postgres.host}:{postgres.port}/{postgres.dbname}/{schema}.members" in message
        assert f"missing INSERT, UPDATE, DELETE on table {schema}.members" in message
        assert f"table {schema}.members__cohortflow_batches does not exist and the user may not create tables" in message
        assert PASSWORD not in message

        destination(postgres, schema).check()  # the owner may do everything

        nowhere = PostgresTableDestination(host=postgres.host, port=postgres.port, user=postgres.user,
                                           dbname="no_such_db", password=Secret(PASSWORD), schema=schema, table="members")
        with pytest.raises(DestinationError) as info:
            nowhere.check()
        assert "cannot connect" in str(info.value) and "no_such_db" in str(info.value) and PASSWORD not in str(info.value)
    finally:
        pg.execute(f"drop owned by {role}")
        pg.execute(f"drop role {role}")


def test_the_password_never_shows_in_repr_results_errors_or_logs(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], schema: str, postgres: PostgresServer,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    create_audience(con, list(range(12)))
    dest = destination(postgres, schema)
    result = sync(con, spec(), dest, tmp_path)
    pg.execute(f"alter table {schema}.members add constraint visits_small check (visits < 0) not valid")
    con.execute("update audiences.versions set v = v + 1")
    refresh(con)
    try:  # every change is refused by the constraint: the run fails, or rejects them one by one
        refused = sync(con, spec(), dest, tmp_path)
        error = ""
    except SyncError as exc:
        refused, error = exc.result, str(exc)
    assert refused is not None and refused.rows_changed == 0
    shown = [repr(dest), str(dest.settings()), dest.location, result.format_text(), str(result.as_metadata()),
             error, refused.format_text(), caplog.text,
             str(con.execute("select * from cohortflow_syncs.sync_runs").fetchall()),
             str(con.execute("select * from cohortflow_syncs.sync_records").fetchall())]
    assert "***" in repr(dest)
    for text in shown:
        assert PASSWORD not in text


def test_settings_from_destinations_yml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert destination_class("postgres") is PostgresTableDestination
    monkeypatch.setenv("COHORTFLOW_TEST_PG_PASSWORD", PASSWORD)
    built = PostgresTableDestination.from_settings(
        {"host": "db.internal", "port": "5433", "user": "writer", "password_env": "COHORTFLOW_TEST_PG_PASSWORD",
         "dbname": "crm", "schema": "audiences", "sslmode": "require"},
        sync_name="vip_to_crm", base_dir=tmp_path,
    )
    assert built.table == "vip_to_crm"  # one table per sync unless named
    assert built.location == "postgresql://writer@db.internal:5433/crm/audiences.vip_to_crm"
    assert built.password_env == "COHORTFLOW_TEST_PG_PASSWORD" and PASSWORD not in repr(built)
    assert built._secret() == Secret(PASSWORD)  # read when connecting, not when the declaration loads
    from_dsn = PostgresTableDestination.from_settings(
        {"dsn": "postgresql://writer@db.internal:6543/crm", "password": PASSWORD, "table": "vip"}, sync_name="x", base_dir=tmp_path
    )
    assert (from_dsn.host, from_dsn.port, from_dsn.dbname, from_dsn.user) == ("db.internal", 6543, "crm", "writer")

    for settings, named in (
        ({"host": "h", "dbname": "d", "colour": "red"}, "colour"),
        ({"host": "h", "dbname": "d", "port": "fifty"}, "port"),
        ({"host": "h"}, "dbname"),
        ({"dbname": "d"}, "host"),
        ({"host": "h", "dbname": "d", "password_env": "not a name"}, "password_env"),
        ({"host": "h", "dbname": "d", "sslmode": "sometimes"}, "sslmode"),
        ({"host": "h", "dbname": "d", "table": "x" * 64}, "table"),
    ):
        with pytest.raises(ValueError, match=named):
            PostgresTableDestination.from_settings(settings, sync_name="s", base_dir=tmp_path)
    with pytest.raises(ValueError, match="must not contain password") as info:
        PostgresTableDestination.from_settings({"dsn": f"postgresql://w:{PASSWORD}@h/d"}, sync_name="s", base_dir=tmp_path)
    assert PASSWORD not in str(info.value)
    unset = PostgresTableDestination.from_settings(
        {"host": "h", "dbname": "d", "password_env": "COHORTFLOW_TEST_UNSET_VAR"}, sync_name="s", base_dir=tmp_path
    )
    with pytest.raises(DestinationError, match="environment variable COHORTFLOW_TEST_UNSET_VAR .* is not set"):
        unset.check()
    with pytest.raises(ValueError, match="Secret"):
        PostgresTableDestination(host="h", dbname="d", table="t", password=PASSWORD)  # type: ignore[arg-type]
