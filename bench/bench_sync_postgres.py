"""Benchmark: a 1,000,000-member audience synced from DuckDB to a Postgres table — cohortflow, and
optionally drt-core on the same data, the same server and the same 1 % change.

What is measured (wall time of the whole call a user makes, medians of ``--repeat``):

* **first sync**: the whole audience into an empty table. cohortflow: ``run_sync`` with
  ``PostgresTableDestination`` (plan in DuckDB, COPY, commit, mark the state), a fresh sync name
  and a dropped table each repetition, ``batch_size=100_000``. drt: ``drt run`` on a fresh table.
* **1 % diff sync**: 0.4 % of the audience join, 0.3 % leave and 0.3 % change one field (a different
  1 % each repetition), then the next run of the same sync.
* **rows written**: what each tool made Postgres write (``n_tup_ins + n_tup_upd + n_tup_del`` of the
  table from ``pg_stat_user_tables``), i.e. how many rows it re-sent.

After every run the Postgres table is compared with the DuckDB audience row by row (outside the
timing); a difference is printed as an error.

The server is a throw-away PostgreSQL started like the test suite's (``tests/integration/
postgres_server.py``: ``fsync=off``, ``synchronous_commit=off``), unless ``--dsn`` names one.

Usage::

    .venv/bin/python bench/bench_sync_postgres.py [--rows 1000000] [--repeat 3] [--json]
        [--drt-venv /tmp/drt-venv] [--drt-repeat 1]

drt: install it in its own venv (``python3.11 -m venv /tmp/drt-venv && /tmp/drt-venv/bin/pip install
'drt-core[postgres]==1.2.1'``); its project files are in ``bench/drt/`` (see the README there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from reverse_etl import SyncSpec, run_sync  # noqa: E402
from reverse_etl.destinations.postgres import PostgresTableDestination  # noqa: E402

DRT_DIR = ROOT / "bench" / "drt"
SOURCE = "audiences.high_value"
COLUMNS = ("user_id", "email", "score", "segment", "updated_at")


def build_source(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    """A deterministic audience: user_id (key), email, score, segment, updated_at."""
    con.execute("create schema if not exists audiences")
    con.execute(
        f"""
        create or replace table {SOURCE} as
        select 'user_' || lpad(i::varchar, 8, '0') as user_id,
               'user' || i || '@example.com' as email,
               round((hash(i) % 100000) / 1000.0, 3)::double as score,
               (['new', 'active', 'lapsing', 'vip'])[1 + i % 4] as segment,
               timestamp '2026-01-01' + to_seconds(i) as updated_at
        from range({rows}) t(i)
        """
    )


def churn(con: duckdb.DuckDBPyConnection, rows: int, round_no: int) -> int:
    """Change 1 % of the audience: 0.4 % join, 0.3 % leave, 0.3 % change. Returns the diff size."""
    joins, leaves, changes = rows * 4 // 1000, rows * 3 // 1000, rows * 3 // 1000
    offset = rows * (round_no + 1)  # new ids never collide with earlier rounds
    con.execute(
        f"""
        insert into {SOURCE}
        select 'user_' || lpad((i + {offset})::varchar, 8, '0'), 'new' || i || '@example.com', 50.0, 'new',
               timestamp '2026-02-01' + to_seconds(i)
        from range({joins}) t(i)
        """
    )
    # Leaves take even ids, changes odd ids, from a block no earlier round touched.
    base = round_no * max(leaves, changes)
    con.execute(
        f"delete from {SOURCE} where user_id in (select 'user_' || lpad((2 * ({base} + i))::varchar, 8, '0') "
        f"from range({leaves}) t(i))"
    )
    con.execute(
        f"update {SOURCE} set score = score + 0.5, updated_at = updated_at + interval 1 day "
        f"where user_id in (select 'user_' || lpad((2 * ({base} + i) + 1)::varchar, 8, '0') from range({changes}) t(i))"
    )
    return joins + leaves + changes


# -- Postgres helpers ------------------------------------------------------------------------------


@contextmanager
def postgres_server(dsn: str | None) -> Iterator[dict[str, Any]]:
    """Connection parameters of a server: the one ``dsn`` names, or a throw-away one."""
    if dsn:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        yield {"host": params.get("host", "127.0.0.1"), "port": int(params.get("port", 5432)),
               "user": params.get("user"), "dbname": params.get("dbname"), "throwaway": False}
        return
    from postgres_server import start_server

    server = start_server()
    try:
        yield {"host": server.host, "port": server.port, "user": server.user, "dbname": server.dbname, "throwaway": True}
    finally:
        server.cleanup()


def pg_connect(pg: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(host=pg["host"], port=pg["port"], user=pg["user"], dbname=pg["dbname"], autocommit=True)


def rows_written(pg: dict[str, Any], schema: str, table: str) -> int:
    """Rows inserted + updated + deleted in the table since the server started (statistics)."""
    with pg_connect(pg) as conn:
        time.sleep(0.6)  # statistics of finished sessions are flushed within ~0.5 s
        conn.execute("select pg_stat_clear_snapshot()")
        row = conn.execute(
            "select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) from pg_stat_user_tables "
            "where schemaname = %s and relname = %s",
            [schema, table],
        ).fetchone()
    return int(row[0]) if row else 0


def compare(con: duckdb.DuckDBPyConnection, pg: dict[str, Any], schema: str, table: str) -> str | None:
    """``None`` when the Postgres table holds exactly the audience, else what differs."""
    import pyarrow.csv as pa_csv
    import io

    with pg_connect(pg) as conn, conn.cursor() as cur:
        buf = io.BytesIO()
        select = ", ".join(COLUMNS)
        with cur.copy(f'copy (select {select} from "{schema}"."{table}") to stdout (format csv, header)') as copy:
            for data in copy:
                buf.write(data)
    buf.seek(0)
    got = pa_csv.read_csv(buf, convert_options=pa_csv.ConvertOptions(
        column_types={"user_id": "string", "email": "string", "score": "float64", "segment": "string"},
    ))
    con.register("pg_copy", got)
    try:
        diff = con.execute(
            f"""
            select (select count(*) from (select {select} from {SOURCE} except all
                                          select user_id, email, score, segment, updated_at::timestamp from pg_copy)),
                   (select count(*) from (select user_id, email, score, segment, updated_at::timestamp from pg_copy
                                          except all select {select} from {SOURCE}))
            """
        ).fetchall()[0]
    finally:
        con.unregister("pg_copy")
    assert diff is not None
    if diff == (0, 0):
        return None
    return f"{diff[0]} audience rows missing or different in Postgres, {diff[1]} extra or different rows in Postgres"


def drop_table(pg: dict[str, Any], schema: str, table: str) -> None:
    with pg_connect(pg) as conn:
        conn.execute(f'drop table if exists "{schema}"."{table}"')
        conn.execute(f'drop table if exists "{schema}"."{table}__cohortflow_batches"')


# -- cohortflow ------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - started, time.process_time() - cpu, value


def bench_cohortflow(warehouse: Path, pg: dict[str, Any], rows: int, repeat: int, locks: Path) -> dict[str, Any]:
    schema, table = "public", "high_value_cohortflow"
    con = duckdb.connect(str(warehouse))
    build_source(con, rows)

    def destination() -> PostgresTableDestination:
        return PostgresTableDestination(host=pg["host"], port=pg["port"], user=pg["user"], dbname=pg["dbname"],
                                        schema=schema, table=table)

    first, first_cpu, first_written, errors = [], [], [], []
    for rep in range(repeat):
        drop_table(pg, schema, table)
        spec = SyncSpec(name=f"high_value_pg_{rep}", source_relation=SOURCE, primary_key=["user_id"], batch_size=100_000)
        before = rows_written(pg, schema, table)
        wall, cpu, result = timed(lambda: run_sync(con, spec, destination(), lock_dir=locks))
        assert result.rows_added == rows, result.format_text()
        first.append(wall)
        first_cpu.append(cpu)
        first_written.append(rows_written(pg, schema, table) - before)
        if (problem := compare(con, pg, schema, table)) is not None:
            errors.append(f"first sync {rep}: {problem}")

    diff, diff_cpu, diff_sizes, diff_written = [], [], [], []
    for rep in range(repeat):
        expected = churn(con, rows, rep)
        before = rows_written(pg, schema, table)
        wall, cpu, result = timed(lambda: run_sync(con, spec, destination(), lock_dir=locks))
        assert result.rows_processed == expected, (result.format_text(), expected)
        diff.append(wall)
        diff_cpu.append(cpu)
        diff_sizes.append(expected)
        diff_written.append(rows_written(pg, schema, table) - before)
        if (problem := compare(con, pg, schema, table)) is not None:
            errors.append(f"diff sync {rep}: {problem}")
    con.close()
    return {
        "first_sync_runs_s": [round(x, 2) for x in first],
        "first_sync_median_s": round(statistics.median(first), 2),
        "first_sync_cpu_median_s": round(statistics.median(first_cpu), 2),
        "first_sync_rows_per_s": round(rows / statistics.median(first)),
        "first_sync_rows_written": first_written,
        "diff_records": diff_sizes,
        "diff_sync_runs_s": [round(x, 2) for x in diff],
        "diff_sync_median_s": round(statistics.median(diff), 2),
        "diff_sync_cpu_median_s": round(statistics.median(diff_cpu), 2),
        "diff_sync_rows_written": diff_written,
        "errors": errors,
    }


# -- drt -------------------------------------------------------------------------------------------


def drt_project(folder: Path, warehouse: Path, pg: dict[str, Any], batch_size: int) -> tuple[Path, dict[str, str]]:
    """Copy bench/drt/ into ``folder`` and the environment drt reads its settings from."""
    project = folder / "drt_project"
    shutil.copytree(DRT_DIR, project, ignore=shutil.ignore_patterns("README.md"))
    env = {
        **os.environ,
        "HOME": str(folder / "home"),  # drt keeps profiles in ~/.drt/profiles.yml
        "BENCH_DUCKDB_PATH": str(warehouse),
        "BENCH_PG_HOST": pg["host"],
        "BENCH_PG_PORT": str(pg["port"]),
        "BENCH_PG_USER": pg["user"] or "",
        "BENCH_PG_DBNAME": pg["dbname"],
        "BENCH_PG_PASSWORD": "unused-trust-auth",
        "BENCH_DRT_BATCH_SIZE": str(batch_size),
        "DRT_TELEMETRY": "0",
        "DO_NOT_TRACK": "1",
    }
    home = folder / "home" / ".drt"
    home.mkdir(parents=True)
    profile = (DRT_DIR / "profiles.yml").read_text()
    (home / "profiles.yml").write_text(profile.replace("BENCH_DUCKDB_PATH", str(warehouse)))
    return project, env


def drt_run(venv: Path, project: Path, env: dict[str, str], log: Path) -> float:
    command = [str(venv / "bin" / "drt"), "run", "--select", "high_value_to_postgres", "--output", "json"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    log.write_text(f"$ {' '.join(command)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"drt run failed ({proc.returncode}); see {log}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def bench_drt(
    venv: Path, warehouse: Path, pg: dict[str, Any], rows: int, repeat: int, folder: Path, batch_size: int
) -> dict[str, Any]:
    schema, table = "public", "high_value_drt"
    con = duckdb.connect(str(warehouse))
    build_source(con, rows)
    con.close()  # drt opens the DuckDB file itself; DuckDB allows one writer process
    first, first_written, errors, diff, diff_sizes, diff_written = [], [], [], [], [], []
    project: Path | None = None
    env: dict[str, str] = {}
    for rep in range(repeat):
        if project is not None:
            shutil.rmtree(project.parent / "home")
            shutil.rmtree(project)
        project, env = drt_project(folder, warehouse, pg, batch_size)
        with pg_connect(pg) as conn:
            conn.execute(f'drop table if exists "{schema}"."{table}"')
            # drt upserts into an existing table (its docs: create it first); same types as cohortflow's.
            conn.execute((DRT_DIR / "create_table.sql").read_text())
        before = rows_written(pg, schema, table)
        first.append(drt_run(venv, project, env, folder / f"drt_first_{rep}.log"))
        first_written.append(rows_written(pg, schema, table) - before)
        con = duckdb.connect(str(warehouse), read_only=True)
        if (problem := compare(con, pg, schema, table)) is not None:
            errors.append(f"drt first sync {rep}: {problem}")
        con.close()
    assert project is not None
    for rep in range(repeat):
        con = duckdb.connect(str(warehouse))
        diff_sizes.append(churn(con, rows, rep))
        con.close()
        before = rows_written(pg, schema, table)
        diff.append(drt_run(venv, project, env, folder / f"drt_diff_{rep}.log"))
        diff_written.append(rows_written(pg, schema, table) - before)
        con = duckdb.connect(str(warehouse), read_only=True)
        if (problem := compare(con, pg, schema, table)) is not None:
            errors.append(f"drt diff sync {rep}: {problem}")
        con.close()
    return {
        "first_sync_runs_s": [round(x, 2) for x in first],
        "first_sync_median_s": round(statistics.median(first), 2),
        "first_sync_rows_per_s": round(rows / statistics.median(first)),
        "first_sync_rows_written": first_written,
        "diff_records": diff_sizes,
        "diff_sync_runs_s": [round(x, 2) for x in diff],
        "diff_sync_median_s": round(statistics.median(diff), 2),
        "diff_sync_rows_written": diff_written,
        "errors": errors,
        "logs": str(folder),
    }


# -- main ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_gib, 1), "python": platform.python_version(),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", help="use this server (trust auth) instead of a throw-away one")
    parser.add_argument("--drt-venv", type=Path, help="a venv with drt-core[postgres]==1.2.1: also run drt")
    parser.add_argument("--drt-repeat", type=int, help="repetitions for drt (default --repeat)")
    parser.add_argument("--drt-batch-size", type=int, default=100, help="drt's sync.batch_size (its default: 100)")
    parser.add_argument("--skip-cohortflow", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep drt logs in this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()

    report: dict[str, Any] = {"rows": args.rows, "repeat": args.repeat, "machine": machine(),
                              "command": " ".join([".venv/bin/python", "bench/bench_sync_postgres.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory(prefix="bench_sync_pg_") as folder, postgres_server(args.dsn) as pg:
        root = Path(folder)
        with pg_connect(pg) as conn:
            report["postgres"] = conn.execute("show server_version").fetchone()[0]  # type: ignore[index]
            report["postgres_settings"] = {
                k: conn.execute(f"show {k}").fetchone()[0]  # type: ignore[index]
                for k in ("fsync", "synchronous_commit", "shared_buffers", "max_wal_size")
            }
        if not args.skip_cohortflow:
            report["cohortflow"] = bench_cohortflow(root / "cohortflow.duckdb", pg, args.rows, args.repeat, root / "locks")
        if args.drt_venv:
            logs = args.keep or root / "drt_logs"
            logs.mkdir(parents=True, exist_ok=True)
            report["drt"] = bench_drt(args.drt_venv, root / "drt.duckdb", pg, args.rows, args.drt_repeat or args.repeat, logs,
                                      args.drt_batch_size)
            report["drt"]["batch_size"] = args.drt_batch_size
    report["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    if args.json:
        print(json.dumps(report))
        return
    m = report["machine"]
    print(f"{args.rows:,} records; {m['nproc']} cores {m['cpu']}, {m['ram_gib']} GiB; Postgres {report['postgres']} "
          f"{report['postgres_settings']}; load {m['load_avg_start']} -> {m['load_avg_end']}")
    for tool in ("cohortflow", "drt"):
        r = report.get(tool)
        if not r:
            continue
        print(f"{tool}:")
        print(f"  first sync: {r['first_sync_median_s']} s median ({r['first_sync_rows_per_s']:,} rows/s)  runs {r['first_sync_runs_s']}"
              f"  rows written {r['first_sync_rows_written']}")
        print(f"  1 % diff:   {r['diff_sync_median_s']} s median  runs {r['diff_sync_runs_s']}  diff {r['diff_records']}"
              f"  rows written {r['diff_sync_rows_written']}")
        for error in r["errors"]:
            print(f"  ERROR {error}")


if __name__ == "__main__":
    main()
