"""The same dbt project on DuckDB and on a real PostgreSQL computes the same cohorts and properties.

Generated sample data is ingested into DuckDB, its raw tables are copied into a fresh Postgres
database, and `dbt build` runs on both targets at one as_of (every data test and unit test must pass
on both). Then every table of the `cohorts` and `marts` schemas, discovered from the manifest, is
compared row by row: exact for ids, integers, text, booleans, timestamps and decimals (money is exact),
floats to 1e-9 relative. A buyer whose 90-day revenue sits exactly on a cohort threshold is added to the
generated data: both engines must judge it alike. The hand-written fixture (tests/fixtures/hand_events)
must also give its hand-worked answers on Postgres.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from hand_events import MOMENTS, expected_members, expected_user_properties, normalise
from postgres_server import PostgresServer
from psycopg import sql
from test_dbt_project import load_hand_events

from cohortflow.generate import generate
from cohortflow.ingest import ingest_files
from cohortflow.warehouse import RAW_SCHEMA, connect

pytestmark = pytest.mark.slow  # four concurrent dbt invocations, ~45 s of CPU in all

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"

DATA_END = datetime(2024, 3, 10)
INGESTED_AT = datetime(2024, 3, 10, 1)
# Late on the last day, so the 24 h / 7 d windows of the example cohorts have members.
AS_OF = "2024-03-09T20:00:00Z"
COMPARED_SCHEMAS = ("cohorts", "marts")
FLOAT_RELATIVE_TOLERANCE = 1e-9
# A buyer whose purchases in the 90 days to AS_OF add up to exactly 500, big_spenders_90d's threshold
# (>= 500). As doubles, in any order, 261.59 + 149.2 + 89.21 is 499.99999999999994.
THRESHOLD_USER = "parity_exactly_500"
THRESHOLD_LINES = (("2024-02-01 10:00:00", "261.59"), ("2024-02-15 10:00:00", "149.2"), ("2024-03-01 10:00:00", "89.21"))
# Tests that only mean something on one engine (config(enabled=target.type == ...)).
DUCKDB_ONLY_TESTS = {"assert_duckdb_interval_expressions_stay_distinct"}

# DuckDB column types -> Postgres DDL for the raw tables. JSON stays `json` (not jsonb): `->>` then
# returns the stored text of a nested value unchanged, as DuckDB does for the compact JSON ingest writes.
POSTGRES_TYPES = {
    "VARCHAR": "text", "JSON": "json", "TIMESTAMP": "timestamp", "BIGINT": "bigint", "INTEGER": "integer",
    "DOUBLE": "double precision", "BOOLEAN": "boolean", "DATE": "date",
}


# ------------------------------------------------------------------------------------------------
# Loading: DuckDB raw tables -> a Postgres database


def create_database(server: PostgresServer, name: str) -> dict[str, str]:
    """A fresh database on `server`; returns the dbt env vars that point the postgres target at it."""
    with psycopg.connect(server.dsn, autocommit=True) as con:
        con.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))
        con.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return {**server.dbt_env(), "COHORTFLOW_PG_DBNAME": name}


def postgres_dsn(env: dict[str, str]) -> str:
    return (f"host={env['COHORTFLOW_PG_HOST']} port={env['COHORTFLOW_PG_PORT']} "
            f"user={env['COHORTFLOW_PG_USER']} dbname={env['COHORTFLOW_PG_DBNAME']}")


def copy_raw_tables(warehouse: Path, env: dict[str, str]) -> dict[str, int]:
    """Copy every table of DuckDB's raw schema into the Postgres database (same names, COPY). Row counts."""
    duck = duckdb.connect(str(warehouse), read_only=True)
    counts: dict[str, int] = {}
    try:
        tables = [t for (t,) in duck.execute(
            "select table_name from information_schema.tables where table_schema = ? order by table_name",
            [RAW_SCHEMA]).fetchall()]
        with psycopg.connect(postgres_dsn(env)) as pg, pg.cursor() as cur:
            cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(RAW_SCHEMA)))
            for table in tables:
                columns = duck.execute(
                    "select column_name, data_type from information_schema.columns "
                    "where table_schema = ? and table_name = ? order by ordinal_position",
                    [RAW_SCHEMA, table]).fetchall()
                unknown = {data_type for _, data_type in columns} - set(POSTGRES_TYPES)
                assert not unknown, f"raw.{table}: no Postgres type for {unknown}: extend POSTGRES_TYPES"
                relation = sql.Identifier(RAW_SCHEMA, table)
                cur.execute(sql.SQL("create table {} ({})").format(relation, sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(POSTGRES_TYPES[data_type]))
                    for name, data_type in columns)))
                names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
                rows = duck.execute(f'select * from {RAW_SCHEMA}."{table}"').fetchall()
                with cur.copy(sql.SQL("copy {} ({}) from stdin").format(relation, names)) as copy:
                    for row in rows:
                        copy.write_row(row)
                counts[table] = len(rows)
    finally:
        duck.close()
    return counts


# ------------------------------------------------------------------------------------------------
# dbt


@dataclass
class Build:
    """One dbt invocation (`build` or `run`; own target / log folders) and what it left behind."""

    name: str
    target: str
    scratch: Path
    env: dict[str, str]
    command: str = "build"
    returncode: int = -1
    output: str = ""

    @property
    def run_results(self) -> list[dict[str, Any]]:
        return json.loads((self.scratch / "target" / "run_results.json").read_text())["results"]

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.scratch / "target" / "manifest.json").read_text())

    def clock_window(self) -> tuple[datetime, datetime]:
        """When this invocation ran (UTC, naive, with a minute of slack): values stamped by run_started_at."""
        metadata = json.loads((self.scratch / "target" / "run_results.json").read_text())["metadata"]
        started, ended = (datetime.fromisoformat(metadata[key].replace("Z", "+00:00")).replace(tzinfo=None)
                          for key in ("invocation_started_at", "generated_at"))
        return started - timedelta(minutes=1), ended + timedelta(minutes=1)

    def statuses(self) -> dict[str, str]:
        """unique_id -> status, without exposures (sync declarations are reported as no-ops)."""
        return {r["unique_id"]: r["status"] for r in self.run_results if not r["unique_id"].startswith("exposure.")}


def run_builds(builds: list[Build], as_of_by_build: dict[str, str]) -> None:
    """Run all builds at once (one dbt process each) and wait for them; fills returncode / output."""
    dbt = Path(sys.executable).parent / "dbt"
    processes = []
    for build in builds:
        build.scratch.mkdir(parents=True, exist_ok=True)
        log = (build.scratch / "dbt.out").open("w")
        arguments = [
            str(dbt), build.command, "--target", build.target, "--vars", json.dumps({"as_of": as_of_by_build[build.name]}),
            "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
            "--target-path", str(build.scratch / "target"), "--log-path", str(build.scratch / "logs"),
        ]
        env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **build.env}
        processes.append((build, log, subprocess.Popen(arguments, cwd=REPO_ROOT, env=env, stdout=log,
                                                       stderr=subprocess.STDOUT, text=True)))
    try:
        for build, _, process in processes:
            build.returncode = process.wait(timeout=300)
    finally:
        for build, log, process in processes:
            if process.poll() is None:  # a timeout above: do not leave dbt running after the test
                process.kill()
                process.wait()
            log.close()
            build.output = (build.scratch / "dbt.out").read_text(errors="replace")


def assert_build_passed(build: Build) -> None:
    assert build.returncode == 0, f"dbt {build.command} on {build.name} failed:\n{build.output[-8000:]}"
    failed = {uid: status for uid, status in build.statuses().items() if status not in ("pass", "success")}
    assert failed == {}, f"{build.name}: {failed}"


# ------------------------------------------------------------------------------------------------
# Reading and comparing tables


def compared_relations(manifest: dict[str, Any]) -> list[str]:
    """schema.name of every model dbt builds into the compared schemas (from the manifest, not a list here)."""
    return sorted(
        f"{node['schema']}.{node['alias'] or node['name']}"
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["schema"] in COMPARED_SCHEMAS
        and node["config"].get("enabled", True) and node["config"]["materialized"] != "ephemeral"
    )


def value_family(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, float):
        return "float"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def plain(value: Any) -> Any:
    """A database value in one notation for both engines: aware times as naive UTC. Decimals stay
    decimals and are compared exactly (Decimal('0.300000') == Decimal('0.3'))."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Order rows the same on both sides although floats may differ in the last bits."""
    return tuple(
        (0, "") if v is None else (1, f"{v:.9e}") if isinstance(v, float)
        else (1, str(v.normalize())) if isinstance(v, Decimal) else (1, repr(v)) for v in row
    )


def same_value(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        if math.isnan(left) or math.isnan(right):
            return math.isnan(left) and math.isnan(right)
        return math.isclose(left, right, rel_tol=FLOAT_RELATIVE_TOLERANCE, abs_tol=1e-12)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same_value(a, b) for a, b in zip(left, right))
    return value_family(left) == value_family(right) and left == right


def read_duckdb(warehouse: Path, relation: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        cursor = con.execute(f"select * from {relation}")
        return [d[0] for d in cursor.description], [tuple(map(plain, row)) for row in cursor.fetchall()]
    finally:
        con.close()


def read_postgres(env: dict[str, str], relation: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(postgres_dsn(env)) as con:
        cursor = con.execute(sql.SQL("select * from {}").format(sql.Identifier(*relation.split("."))))
        return [d.name for d in cursor.description], [tuple(map(plain, row)) for row in cursor.fetchall()]


RUN_CLOCK = "<this run's clock>"


def mask_run_clock(
    columns: list[str], left_rows: list[tuple], right_rows: list[tuple],
    left_window: tuple[datetime, datetime], right_window: tuple[datetime, datetime],
) -> tuple[list[str], list[tuple], list[tuple]]:
    """Columns stamped with the time of the dbt run (e.g. a `last_computed_at` from run_started_at)
    cannot be equal between two runs. A timestamp column whose every value lies within its own run,
    on both engines, is masked; the masked column names are returned."""
    masked = []
    for index, column in enumerate(columns):
        sides = [(left_rows, left_window), (right_rows, right_window)]
        if all(rows and all(isinstance(row[index], datetime) and window[0] <= row[index] <= window[1] for row in rows)
               for rows, window in sides):
            masked.append(index)
    mask = lambda row: tuple(RUN_CLOCK if i in masked else v for i, v in enumerate(row))  # noqa: E731
    return [columns[i] for i in masked], [mask(r) for r in left_rows], [mask(r) for r in right_rows]


def table_differences(relation: str, left: tuple[list[str], list[tuple]], right: tuple[list[str], list[tuple]]) -> list[str]:
    """What differs between the DuckDB (left) and Postgres (right) copies of one table, at most a few lines."""
    (left_columns, left_rows), (right_columns, right_rows) = left, right
    if left_columns != right_columns:
        return [f"{relation}: columns {left_columns} (duckdb) != {right_columns} (postgres)"]
    if len(left_rows) != len(right_rows):
        return [f"{relation}: {len(left_rows)} rows (duckdb) != {len(right_rows)} rows (postgres)"]
    problems = []
    for left_row, right_row in zip(sorted(left_rows, key=sort_key), sorted(right_rows, key=sort_key)):
        for column, a, b in zip(left_columns, left_row, right_row):
            if not same_value(a, b):
                problems.append(f"{relation}.{column}: duckdb {a!r} != postgres {b!r} (row {left_row[:2]})")
        if len(problems) >= 5:
            break
    return problems


def postgres_relations(env: dict[str, str]) -> set[str]:
    with psycopg.connect(postgres_dsn(env)) as con:
        rows = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables where table_schema = any(%s)",
            [list(COMPARED_SCHEMAS)]).fetchall()
    return {r[0] for r in rows}


def duckdb_relations(warehouse: Path) -> set[str]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables where table_schema in ?",
            [list(COMPARED_SCHEMAS)]).fetchall()
    finally:
        con.close()
    return {r[0] for r in rows}


# ------------------------------------------------------------------------------------------------
# Fixture: generated data on both engines + the hand fixture on Postgres at each of its moments


@dataclass
class Builds:
    warehouse: Path
    duckdb: Build
    postgres: Build
    hand: list[tuple[dict[str, Any], Build]]


@pytest.fixture(scope="module")
def builds(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Builds:
    root = tmp_path_factory.mktemp("postgres_parity")
    data_dir = root / "data"
    generate(data_dir, users=300, days=45, seed=11, end=DATA_END)
    warehouse = root / "parity.duckdb"
    con = connect(warehouse)
    try:
        ingest_files(con, [data_dir / "items.csv"], "csv", entity="items", now=INGESTED_AT)
        ingest_files(con, [data_dir / "users.csv"], "csv", entity="users", now=INGESTED_AT)
        ingest_files(con, sorted(data_dir.glob("events-*.jsonl.gz")), "amplitude-export", now=INGESTED_AT)
        for index, (at, revenue) in enumerate(THRESHOLD_LINES, start=1):
            con.execute(
                "insert into raw.events (event_id, insert_id, user_id, event_type, event_time, event_properties, "
                "user_properties, source_format, source_file, source_row, ingested_at) values "
                "(?, ?, ?, 'purchase', cast(? as timestamp), ?, '{}', 'amplitude', 'threshold.jsonl', ?, ?)",
                [f"threshold-{index}", f"threshold-{index}", THRESHOLD_USER, at,
                 f'{{"order_id": "threshold-{index}", "revenue": {revenue}}}', index, INGESTED_AT])
    finally:
        con.close()
    parity_env = create_database(postgres, "parity")
    counts = copy_raw_tables(warehouse, parity_env)
    assert counts["events"] > 5000 and counts["users"] == 300, counts

    hand_warehouse = root / "hand_events.duckdb"
    load_hand_events(hand_warehouse)
    hand = []
    for index, moment in enumerate(MOMENTS):
        env = create_database(postgres, f"hand_events_{index}")
        copy_raw_tables(hand_warehouse, env)
        # Models only: the parity build runs every data test and unit test on Postgres; here the
        # answers themselves are checked against the hand-worked ones.
        hand.append((moment, Build(f"hand_events_{index}", "postgres", root / f"hand_{index}", env, "run")))

    duckdb_build = Build("duckdb", "duckdb", root / "duckdb", {"COHORTFLOW_WAREHOUSE": str(warehouse)})
    postgres_build = Build("postgres", "postgres", root / "postgres", parity_env)
    as_of = {"duckdb": AS_OF, "postgres": AS_OF, **{b.name: m["as_of"] for m, b in hand}}
    run_builds([duckdb_build, postgres_build, *(b for _, b in hand)], as_of)
    return Builds(warehouse, duckdb_build, postgres_build, hand)


# ------------------------------------------------------------------------------------------------
# Tests


def test_both_builds_pass_the_same_tests(builds: Builds) -> None:
    assert_build_passed(builds.duckdb)
    assert_build_passed(builds.postgres)
    on_duckdb = set(builds.duckdb.statuses())
    on_postgres = set(builds.postgres.statuses())
    # Every model, data test and unit test ran on Postgres too, except the DuckDB-only ones.
    assert {uid.split(".")[2] for uid in on_duckdb - on_postgres} == DUCKDB_ONLY_TESTS
    assert on_postgres - on_duckdb == set()
    assert sum(uid.startswith("unit_test.") for uid in on_postgres) > 0


def test_duckdb_interval_bug_test_runs_on_duckdb_only(builds: Builds) -> None:
    duckdb_statuses = {uid.split(".")[2]: s for uid, s in builds.duckdb.statuses().items() if uid.startswith("test.")}
    postgres_tests = {uid.split(".")[2] for uid in builds.postgres.statuses() if uid.startswith("test.")}
    for name in DUCKDB_ONLY_TESTS:
        assert duckdb_statuses.get(name) == "pass"
        assert name not in postgres_tests


def test_every_cohort_and_mart_table_is_equal_on_both_engines(builds: Builds) -> None:
    assert builds.duckdb.returncode == 0 and builds.postgres.returncode == 0, "see test_both_builds_pass_the_same_tests"
    relations = compared_relations(builds.duckdb.manifest)
    assert relations == compared_relations(builds.postgres.manifest)
    # The manifest and both databases agree on what exists, and the core tables are among it.
    assert set(relations) == duckdb_relations(builds.warehouse) == postgres_relations(builds.postgres.env)
    assert {"marts.cohort_memberships", "marts.cohorts", "marts.user_properties"} <= set(relations)
    assert sum(r.startswith("cohorts.") for r in relations) >= 3

    problems: list[str] = []
    run_clock_columns: list[str] = []
    members = 0
    for relation in relations:
        (columns, left_rows), (right_columns, right_rows) = (
            read_duckdb(builds.warehouse, relation), read_postgres(builds.postgres.env, relation))
        if columns == right_columns:
            masked, left_rows, right_rows = mask_run_clock(
                columns, left_rows, right_rows, builds.duckdb.clock_window(), builds.postgres.clock_window())
            run_clock_columns += [f"{relation}.{column}" for column in masked]
        members += len(left_rows) if relation.startswith("cohorts.") else 0
        problems += table_differences(relation, (columns, left_rows), (right_columns, right_rows))
    assert problems == []
    assert members > 0, "no cohort has a member at as_of: the comparison would prove little"
    # Only stamps of the run itself are exempt, never a property or a membership time.
    assert not [c for c in run_clock_columns if c.startswith("cohorts.") or ".user_properties" in c], run_clock_columns


def read_postgres_dicts(env: dict[str, str], relation: str) -> list[dict[str, Any]]:
    """Rows in expected.yml's notation (hand_events.normalise)."""
    columns, rows = read_postgres(env, relation)
    return [dict(zip(columns, map(normalise, row))) for row in rows]


@pytest.mark.parametrize("index", range(len(MOMENTS)), ids=[m["as_of"] for m in MOMENTS])
def test_hand_events_give_the_hand_worked_answer_on_postgres(builds: Builds, index: int) -> None:
    """The checks of test_dbt_project.py, on Postgres: the same expected.yml must come out."""
    moment, build = builds.hand[index]
    assert_build_passed(build)

    actual = {row.pop("user_id"): row for row in read_postgres_dicts(build.env, "marts.user_properties")}
    assert actual == expected_user_properties(moment)

    members = expected_members(moment)
    for cohort_id, expected in members.items():
        rows = read_postgres_dicts(build.env, f"cohorts.{cohort_id}")
        assert sorted((r["user_id"], r["entered_at"]) for r in rows) == expected, cohort_id

    rows = read_postgres_dicts(build.env, "marts.cohort_memberships")
    assert sorted((r["cohort_id"], r["user_id"], r["entered_at"]) for r in rows) == sorted(
        (cohort_id, user_id, entered_at) for cohort_id, pairs in members.items() for user_id, entered_at in pairs)

    cohorts = read_postgres_dicts(build.env, "marts.cohorts")
    assert sorted(r["cohort_id"] for r in cohorts) == sorted(moment["cohorts"]["cohort_ids"])
    for row in cohorts:
        assert row["size"] == len(members.get(row["cohort_id"], [])), row["cohort_id"]
        assert row["computed_at"] == moment["computed_at"]


def show_inline(build: Build, inline_sql: str) -> list[dict[str, Any]]:
    """`dbt show --inline` on `build`'s target and database (after it was built): the rows."""
    dbt = Path(sys.executable).parent / "dbt"
    scratch = build.scratch.parent / f"{build.name}_show"
    result = subprocess.run(
        [str(dbt), "show", "--inline", inline_sql, "--limit", "-1", "--output", "json", "--log-format", "json",
         "--target", build.target, "--vars", json.dumps({"as_of": AS_OF}),
         "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
         "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs")],
        cwd=REPO_ROOT, env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **build.env},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    previews = [json.loads(line)["data"]["preview"] for line in result.stdout.splitlines()
                if line.startswith("{") and json.loads(line)["info"]["name"] == "ShowNode"]
    assert len(previews) == 1, result.stdout[-4000:]
    return json.loads(previews[0])


def test_a_total_exactly_on_the_threshold_is_judged_alike_on_both_engines(builds: Builds) -> None:
    """Money is exact on both engines: THRESHOLD_USER's 90-day revenue is exactly 500, so the >= 500 of
    big_spenders_90d admits them and a strict > 500 does not, on DuckDB and on Postgres alike."""
    assert builds.duckdb.returncode == 0 and builds.postgres.returncode == 0, "see test_both_builds_pass_the_same_tests"
    for rows in (read_duckdb(builds.warehouse, "cohorts.big_spenders_90d")[1],
                 read_postgres(builds.postgres.env, "cohorts.big_spenders_90d")[1]):
        assert THRESHOLD_USER in {row[0] for row in rows}
    revenue = "select revenue_90d from marts.user_properties where user_id = '" + THRESHOLD_USER + "'"
    duck = duckdb.connect(str(builds.warehouse), read_only=True)
    try:
        on_duckdb = duck.execute(revenue).fetchone()[0]
    finally:
        duck.close()
    with psycopg.connect(postgres_dsn(builds.postgres.env)) as pg:
        on_postgres = pg.execute(revenue).fetchone()[0]
    assert on_duckdb == on_postgres == Decimal("500") and str(on_duckdb) == str(on_postgres) == "500.000000"

    strict = ("{{ cohort(all_of=[performed('purchase', measure=total('revenue'), operator='>', value=500, "
              "within=last(90, 'days'))]) }}")
    members = [sorted(row["user_id"] for row in show_inline(build, strict)) for build in (builds.duckdb, builds.postgres)]
    assert members[0] == members[1]
    assert members[0] and THRESHOLD_USER not in members[0]
