"""Benchmark: the whole dbt segmentation layer on ~10M events, full and incremental, beside the raw floor.

For each repetition, on a fresh copy of a warehouse that holds only the ingested raw tables:

1. ``dbt run`` at as_of = ``--end`` (a full build: the incremental models are created from scratch),
   then ``dbt test`` (timed separately);
2. ingest an increment of ~1 % more events (a second generated data set, another seed, whose
   two days overlap the end of the first: half of it are late events for the last day), then
   ``dbt run`` at as_of = ``--end`` + 1 day (the incremental run an hourly schedule would do);
3. the raw floor: the SQL dbt compiled for every model, run directly in DuckDB in dependency order
   with the same materialisations (``create or replace table`` / ``view``; for the incremental run
   ``insert`` for append and delete + insert for delete+insert), on another copy of the same raw data.

dbt's start-up (process start, adapter registration, project parse) is measured as wall time minus
the ``elapsed_time`` dbt reports in run_results.json. Generated files, the raw warehouse and the
increment are cached under ``--cache`` and reused when present.

Usage::

    .venv/bin/python bench/bench_segmentation.py [--users 100000] [--days 100] [--seed 42]
        [--end 2025-03-03] [--repeat 3] [--cache /tmp/cohortflow-bench-segmentation] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from cohortflow.generate import generate
from cohortflow.ingest import ingest_files
from cohortflow.warehouse import connect

DBT = Path(sys.executable).parent / "dbt"
# The dbt project next to this script (not the installed package's), so a checkout measures itself.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
# Share of --users in the increment: 2 days of 40 % of the users is ~1 % of 100 days of all users.
INCREMENT_USER_SHARE = 0.4
INCREMENT_DAYS = 2
# The warehouse file name is the DuckDB catalog name compiled SQL refers to: keep it in every copy.
WAREHOUSE_NAME = "cohortflow.duckdb"


def cached_data_set(cache: Path, users: int, days: int, seed: int, end: datetime) -> Path:
    folder = cache / f"data-u{users}-d{days}-s{seed}-e{end:%Y-%m-%d}"
    done = folder / ".complete"
    if not done.exists():
        print(f"generating {users:,} users x {days} days (seed {seed}) into {folder} ...", flush=True)
        print(generate(folder, users=users, days=days, seed=seed, end=end).format_text(), flush=True)
        done.write_text("ok\n")
    return folder


def cached_raw_warehouse(cache: Path, data: Path) -> Path:
    """A warehouse holding only the ingested raw tables of `data` (ingested once, then copied)."""
    path = cache / f"raw-{data.name}" / WAREHOUSE_NAME
    if not (path.parent / ".complete").exists():
        shutil.rmtree(path.parent, ignore_errors=True)
        path.parent.mkdir(parents=True)
        print(f"ingesting {data} into {path} ...", flush=True)
        started = time.perf_counter()
        ingest(path, data, with_catalogue=True)
        print(f"ingested in {time.perf_counter() - started:.1f} s", flush=True)
        (path.parent / ".complete").write_text("ok\n")
    return path


def ingest(warehouse: Path, data: Path, *, with_catalogue: bool) -> int:
    con = connect(warehouse)
    try:
        if with_catalogue:
            ingest_files(con, [data / "items.csv"], "csv", entity="items")
            ingest_files(con, [data / "users.csv"], "csv", entity="users")
        summary = ingest_files(con, sorted(data.glob("events-*.jsonl.gz")), "amplitude-export")
        con.execute("checkpoint")
        return sum(f.rows_loaded for f in summary.files)
    finally:
        con.close()


def dbt(command: list[str], warehouse: Path, scratch: Path, as_of: str) -> dict[str, Any]:
    """Run dbt; return wall time, dbt's own elapsed time and per-model timings from run_results.json."""
    # As orchestration passes them (orchestration/dbt_config.py): in the environment, so that dbt can
    # reuse the partial parse of an earlier invocation in the same target folder.
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "COHORTFLOW_WAREHOUSE": str(warehouse), "COHORTFLOW_AS_OF": as_of}
    args = [
        str(DBT), *command,
        "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs"),
    ]
    started, cpu = time.perf_counter(), os.times()
    result = subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = os.times()
    if result.returncode != 0:
        raise SystemExit(f"dbt {' '.join(command)} failed:\n{result.stdout[-5000:]}\n{result.stderr[-2000:]}")
    run_results = json.loads((scratch / "target" / "run_results.json").read_text())
    timings = {
        r["unique_id"].split(".")[-1]: round(r["execution_time"], 3)
        for r in run_results["results"]
        if r["unique_id"].startswith("model.")
    }
    return {
        "wall_s": wall,
        "cpu_s": (after.children_user - cpu.children_user) + (after.children_system - cpu.children_system),
        "dbt_elapsed_s": run_results["elapsed_time"],
        "models": timings,
        "nodes": len(run_results["results"]),
    }


def compiled_models(scratch: Path) -> list[dict[str, Any]]:
    """Models of the manifest written by `dbt compile`, in dependency order, with their compiled SQL."""
    manifest = json.loads((scratch / "target" / "manifest.json").read_text())
    models = {uid: node for uid, node in manifest["nodes"].items() if node["resource_type"] == "model"}
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(uid: str) -> None:
        if uid in ordered or uid not in models:
            return
        if uid in visiting:
            raise RuntimeError(f"cycle at {uid}")
        visiting.add(uid)
        for parent in models[uid]["depends_on"]["nodes"]:
            visit(parent)
        ordered.append(uid)

    for uid in sorted(models):
        visit(uid)
    return [models[uid] for uid in ordered]


def run_floor(warehouse: Path, models: list[dict[str, Any]], *, incremental: bool) -> float:
    """Execute compiled model SQL directly in DuckDB with dbt's materialisations; return wall seconds."""
    con = duckdb.connect(str(warehouse))
    try:
        # The dbt profile's settings (profiles.yml), so both sides run the same plans.
        con.execute("set timezone = 'UTC'")
        con.execute("set disabled_optimizers = 'common_subexpressions'")
        started = time.perf_counter()
        for node in models:
            relation = f'"{node["schema"]}"."{node["alias"]}"'
            sql = node["compiled_code"]
            materialized = node["config"]["materialized"]
            con.execute(f'create schema if not exists "{node["schema"]}"')
            if materialized == "view":
                con.execute(f"create or replace view {relation} as {sql}")
            elif materialized == "table" or not incremental:
                con.execute(f"create or replace table {relation} as {sql}")
            elif node["config"].get("incremental_strategy") == "append":
                con.execute(f"insert into {relation} {sql}")
            else:  # delete+insert on unique_key, as dbt-duckdb does it
                keys = node["config"]["unique_key"]
                keys = [keys] if isinstance(keys, str) else keys
                con.execute(f"create or replace temp table floor_increment as {sql}")
                match = " and ".join(f"{relation}.{k} = floor_increment.{k}" for k in keys)
                con.execute(f"delete from {relation} using floor_increment where {match}")
                con.execute(f"insert into {relation} select * from floor_increment")
                con.execute("drop table floor_increment")
        return time.perf_counter() - started
    finally:
        con.close()


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--end", type=datetime.fromisoformat, default=datetime(2025, 3, 3),
                        help="end of the generated period, and as_of of the full build")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cohortflow-bench-segmentation")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--skip-floor", action="store_true", help="do not measure the raw floor (saves time at large scales)")
    parser.add_argument("--skip-test", action="store_true", help="do not time dbt test")
    args = parser.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    base = cached_data_set(args.cache, args.users, args.days, args.seed, args.end)
    increment_end = args.end + timedelta(days=1)
    increment = cached_data_set(
        args.cache, max(1, round(args.users * INCREMENT_USER_SHARE)), INCREMENT_DAYS, args.seed + 1, increment_end)
    raw = cached_raw_warehouse(args.cache, base)
    full_as_of = args.end.strftime("%Y-%m-%d %H:%M:%S")
    incremental_as_of = increment_end.strftime("%Y-%m-%d %H:%M:%S")

    runs: dict[str, list[Any]] = {k: [] for k in (
        "full_run", "test", "incremental_run", "startup", "startup_partial_parse", "floor_full", "floor_incremental", "increment_rows")}
    full_models: list[dict[str, float]] = []
    incremental_models: list[dict[str, float]] = []
    base_events = None
    for rep in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench_segmentation_", dir=args.cache) as folder:
            root = Path(folder)
            warehouse = root / "dbt" / WAREHOUSE_NAME
            floor = root / "floor" / WAREHOUSE_NAME
            for path in (warehouse, floor):
                path.parent.mkdir()
                shutil.copyfile(raw, path)
            if base_events is None:
                with duckdb.connect(str(raw), read_only=True) as con:
                    base_events = con.execute("select count(*) from raw.events").fetchone()[0]

            # Start-up: an invocation selecting nothing (process, adapter, parse; no model work), once
            # with a full parse (a new target folder or warehouse) and once reusing that parse.
            startup = dbt(["run", "--select", "tag:no_such_tag"], warehouse, root / "startup", full_as_of)
            runs["startup"].append(startup["wall_s"])
            partial = dbt(["run", "--select", "tag:no_such_tag"], warehouse, root / "startup", full_as_of)
            runs["startup_partial_parse"].append(partial["wall_s"])

            full = dbt(["run"], warehouse, root / "full", full_as_of)
            runs["full_run"].append(full)
            full_models.append(full["models"])
            if not args.skip_test:
                runs["test"].append(dbt(["test"], warehouse, root / "test", full_as_of))

            if not args.skip_floor:
                # Raw floor of the full build: compile against the raw-only copy (no incremental state).
                dbt(["compile"], floor, root / "compile_full", full_as_of)
                runs["floor_full"].append(run_floor(floor, compiled_models(root / "compile_full"), incremental=False))

            rows = ingest(warehouse, increment, with_catalogue=False)
            if not args.skip_floor:
                ingest(floor, increment, with_catalogue=False)
            runs["increment_rows"].append(rows)

            # Same target folder as the full run: like a scheduled run (dagster-dbt copies the project's
            # partial parse into each invocation), it reuses the parse; only the as_of moved.
            incremental = dbt(["run"], warehouse, root / "full", incremental_as_of)
            runs["incremental_run"].append(incremental)
            incremental_models.append(incremental["models"])

            if not args.skip_floor:
                # Raw floor of the incremental run: the incremental SQL dbt compiles against the floor's state.
                dbt(["compile"], floor, root / "compile_incremental", incremental_as_of)
                runs["floor_incremental"].append(
                    run_floor(floor, compiled_models(root / "compile_incremental"), incremental=True))
            print(
                f"run {rep + 1}/{args.repeat}: full dbt run {full['wall_s']:.1f} s (dbt {full['dbt_elapsed_s']:.1f} s, "
                f"SQL {sum(full['models'].values()):.1f} s), incremental run {incremental['wall_s']:.1f} s "
                f"(dbt {incremental['dbt_elapsed_s']:.1f} s, SQL {sum(incremental['models'].values()):.1f} s), "
                f"start-up {startup['wall_s']:.1f} s (partial parse {partial['wall_s']:.1f} s)",
                flush=True,
            )

    def wall(key: str) -> list[float]:
        return [r["wall_s"] for r in runs[key]]

    def elapsed(key: str) -> list[float]:
        return [r["dbt_elapsed_s"] for r in runs[key]]

    def slowest(per_run: list[dict[str, float]], n: int = 8) -> dict[str, float]:
        names = per_run[0].keys()
        medians = {name: median([m[name] for m in per_run]) for name in names}
        return dict(sorted(medians.items(), key=lambda kv: -kv[1])[:n])

    full_wall = median(wall("full_run"))
    # "SQL work": the sum of dbt's per-model execution times (what the models cost, whatever dbt's
    # start-up, bookkeeping and its two threads add or hide).
    full_sql = median([sum(m.values()) for m in full_models])
    incremental_sql = median([sum(m.values()) for m in incremental_models])

    def optional(values: list[float]) -> float | None:
        return median(values) if values else None

    report = {
        "users": args.users,
        "days": args.days,
        "seed": args.seed,
        "base_events": base_events,
        "increment_events": runs["increment_rows"][0],
        "increment_share_pct": round(100 * runs["increment_rows"][0] / base_events, 2),
        "repeat": args.repeat,
        "models": len(full_models[0]),
        "full_run_wall_s": full_wall,
        "full_run_wall_runs": [round(x, 2) for x in wall("full_run")],
        "full_run_dbt_elapsed_s": median(elapsed("full_run")),
        "full_run_cpu_s": median([r["cpu_s"] for r in runs["full_run"]]),
        "full_run_sql_s": full_sql,
        "test_wall_s": optional(wall("test")),
        "test_dbt_elapsed_s": optional(elapsed("test")),
        "tests": runs["test"][0]["nodes"] if runs["test"] else None,
        "incremental_run_wall_s": median(wall("incremental_run")),
        "incremental_run_wall_runs": [round(x, 2) for x in wall("incremental_run")],
        "incremental_run_dbt_elapsed_s": median(elapsed("incremental_run")),
        "incremental_run_cpu_s": median([r["cpu_s"] for r in runs["incremental_run"]]),
        "incremental_run_sql_s": incremental_sql,
        "incremental_vs_full_sql_pct": round(100 * incremental_sql / full_sql, 1),
        "full_run_seconds_per_million_events": round(full_wall / (base_events / 1e6), 3),
        "dbt_startup_s": median(runs["startup"]),
        "dbt_startup_partial_parse_s": median(runs["startup_partial_parse"]),
        "floor_full_s": optional(runs["floor_full"]),
        "floor_incremental_s": optional(runs["floor_incremental"]),
        "full_vs_target_30s": round(full_wall / 30, 2),
        "incremental_vs_full_pct": round(100 * median(wall("incremental_run")) / full_wall, 1),
        "slowest_models_full_s": slowest(full_models),
        "slowest_models_incremental_s": slowest(incremental_models),
        "models_full_s": slowest(full_models, n=1000),
        "models_incremental_s": slowest(incremental_models, n=1000),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"\n{args.users:,} users x {args.days} days: {base_events:,} events, {report['models']} models; "
        f"increment {report['increment_events']:,} events ({report['increment_share_pct']} %); medians of {args.repeat}\n"
        f"  full dbt run        {report['full_run_wall_s']:6.2f} s wall  (dbt elapsed {report['full_run_dbt_elapsed_s']:.2f} s; "
        f"SQL work {full_sql:.2f} s; {report['full_run_seconds_per_million_events']} s per million events)\n"
        f"  dbt test            {report['test_wall_s'] or 0:6.2f} s wall  ({report['tests']} tests)\n"
        f"  incremental dbt run {report['incremental_run_wall_s']:6.2f} s wall  (dbt elapsed "
        f"{report['incremental_run_dbt_elapsed_s']:.2f} s; {report['incremental_vs_full_pct']} % of the full run)\n"
        f"  incremental SQL work {incremental_sql:5.2f} s  ({report['incremental_vs_full_sql_pct']} % of the full run's)\n"
        f"  dbt start-up        {report['dbt_startup_s']:6.2f} s  (full parse; {report['dbt_startup_partial_parse_s']:.2f} s with a partial parse)\n"
        f"  raw floor, full     {report['floor_full_s'] or 0:6.2f} s\n"
        f"  raw floor, incr.    {report['floor_incremental_s'] or 0:6.2f} s\n"
        f"  slowest models (full):        {report['slowest_models_full_s']}\n"
        f"  slowest models (incremental): {report['slowest_models_incremental_s']}"
    )


if __name__ == "__main__":
    main()
