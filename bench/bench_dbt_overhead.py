"""Benchmark: what one dbt invocation of this project costs when the models have (almost) no data.

The segmentation benchmark (bench_segmentation.py) asks an hourly incremental run to cost <= 15 % of
a full build. This script measures the part of every run that does not depend on the data: the same
dbt project on a tiny warehouse (200 users x 5 days, ~10k events), where model SQL takes
milliseconds, so what is left is dbt itself:

1. ``dbt run --select tag:no_such_tag``: process start, imports, profile, partial parse, no nodes;
2. ``dbt run`` of every model as a new process (what ``cohortflow run`` and dagster-dbt do: dagster-dbt
   starts the ``dbt`` CLI as a subprocess for each run), with a partial parse;
3. ``dbtRunner(manifest=...).invoke(["run"])`` in one long-lived Python process that parsed once: no
   process start, no imports, no parse — only dbt's per-node work (compile, materialise, bookkeeping);
4. ``import dbt.cli.main`` alone, in a fresh interpreter.

Usage::

    .venv/bin/python bench/bench_dbt_overhead.py [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
BIN = Path(sys.executable).parent
AS_OF = "2025-03-03 00:00:00"


def build_tiny_warehouse(root: Path) -> Path:
    from cohortflow.generate import generate
    from cohortflow.ingest import ingest_files
    from cohortflow.warehouse import connect

    data = root / "data"
    generate(data, users=200, days=5, seed=7, end=__import__("datetime").datetime(2025, 3, 3))
    warehouse = root / "w" / "cohortflow.duckdb"
    warehouse.parent.mkdir(parents=True)
    con = connect(warehouse)
    try:
        ingest_files(con, [data / "items.csv"], "csv", entity="items")
        ingest_files(con, [data / "users.csv"], "csv", entity="users")
        ingest_files(con, sorted(data.glob("events-*.jsonl.gz")), "amplitude-export")
    finally:
        con.close()
    return warehouse


def dbt_env(warehouse: Path, as_of: str) -> dict[str, str]:
    return {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "COHORTFLOW_WAREHOUSE": str(warehouse), "COHORTFLOW_AS_OF": as_of}


def dbt_process(command: list[str], warehouse: Path, target: Path, as_of: str) -> dict[str, float]:
    args = [str(BIN / "dbt"), *command, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
            "--target-path", str(target), "--log-path", str(target / "logs")]
    started = time.perf_counter()
    result = subprocess.run(args, cwd=PROJECT_ROOT, env=dbt_env(warehouse, as_of), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"dbt {' '.join(command)} failed:\n{result.stdout[-3000:]}")
    elapsed = json.loads((target / "run_results.json").read_text())["elapsed_time"]
    return {"wall_s": wall, "dbt_elapsed_s": elapsed}


IN_PROCESS = r"""
import json, os, sys, time
from dbt.cli.main import dbtRunner
target, repeat = sys.argv[1], int(sys.argv[2])
common = ["--project-dir", os.environ["P"], "--profiles-dir", os.environ["P"], "--target-path", target,
          "--log-path", target + "/logs", "--quiet"]
manifest = dbtRunner().invoke(["parse", *common]).result
walls = []
for i in range(repeat):
    os.environ["COHORTFLOW_AS_OF"] = f"2025-03-0{3 + i % 5} 00:00:00"
    started = time.perf_counter()
    res = dbtRunner(manifest=manifest).invoke(["run", *common])
    walls.append(time.perf_counter() - started)
    if not res.success:
        raise SystemExit(f"in-process dbt run failed: {res.exception}")
print(json.dumps(walls))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_dbt_overhead_") as folder:
        root = Path(folder)
        warehouse = build_tiny_warehouse(root)
        target = root / "target"
        dbt_process(["run"], warehouse, target, AS_OF)  # parse once, build the incremental models
        noop, run = [], []
        for i in range(args.repeat):
            noop.append(dbt_process(["run", "--select", "tag:no_such_tag"], warehouse, target, AS_OF)["wall_s"])
            run.append(dbt_process(["run"], warehouse, target, f"2025-03-0{3 + i % 5} 00:00:00"))
        in_process = json.loads(subprocess.run(
            [sys.executable, "-c", IN_PROCESS, str(root / "target_in_process"), str(args.repeat)],
            env={**dbt_env(warehouse, AS_OF), "P": str(DBT_PROJECT_DIR)}, capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1])
        imports = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import dbt.cli.main"], check=True)
            imports.append(time.perf_counter() - started)
        with __import__("duckdb").connect(str(warehouse), read_only=True) as con:
            events = con.execute("select count(*) from raw.events").fetchone()[0]
        models = len(json.loads((target / "run_results.json").read_text())["results"])

    report: dict[str, Any] = {
        "events": events,
        "models": models,
        "repeat": args.repeat,
        "import_dbt_s": round(statistics.median(imports), 2),
        "noop_process_s": round(statistics.median(noop), 2),
        "run_process_wall_s": round(statistics.median(r["wall_s"] for r in run), 2),
        "run_process_wall_runs": [round(r["wall_s"], 2) for r in run],
        "run_process_dbt_elapsed_s": round(statistics.median(r["dbt_elapsed_s"] for r in run), 2),
        "run_in_process_s": round(statistics.median(in_process), 2),
        "run_in_process_runs": [round(x, 2) for x in in_process],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"dbt on a tiny warehouse ({events:,} events, {models} models), medians of {args.repeat}:\n"
        f"  import dbt.cli.main (fresh interpreter)          {report['import_dbt_s']:5.2f} s\n"
        f"  dbt run selecting nothing (process, parse)       {report['noop_process_s']:5.2f} s\n"
        f"  dbt run, every model, new process                {report['run_process_wall_s']:5.2f} s wall "
        f"(dbt elapsed {report['run_process_dbt_elapsed_s']:.2f} s) {report['run_process_wall_runs']}\n"
        f"  dbt run, every model, long-lived process, parsed {report['run_in_process_s']:5.2f} s {report['run_in_process_runs']}"
    )


if __name__ == "__main__":
    main()
