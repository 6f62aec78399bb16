"""Benchmark: a prediction at 100k users / ~10M events — features for every cutoff, training, scoring.

On a warehouse whose segmentation layer is already built as of ``--end`` (cached), each repetition
times, each phase in a fresh process so that its peak memory is its own:

1. **features**: ``dbt run --select prediction_features prediction_outcomes`` (every cutoff in one
   pass: the scoring cutoff and ``prediction_cutoffs`` weekly ones) — wall time of the dbt process and
   the SQL time dbt reports;
2. **train + score**: ``ml.predictions.run_prediction(retrain=True)`` — examples from the warehouse,
   both candidates fitted, calibrated and validated, feature importance, the model saved (skops), every
   user of the starting cohort scored and written;
3. **score** (the hourly path): ``run_prediction(retrain=False)`` with the model of step 2.

The target of issue 10: 1 + 2 ≤ 60 s and 3 ≤ 10 s. Peak memory is the maximum resident set size of
the phase's process (dbt: its own process; the others: the Python process, DuckDB included).

Usage::

    .venv/bin/python bench/bench_predictions.py [--users 100000] [--days 100] [--prediction purchase_7d]
        [--repeat 3] [--cache /tmp/cohortflow-bench-segmentation] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench_segmentation import DBT, DBT_PROJECT_DIR, WAREHOUSE_NAME, cached_data_set, cached_raw_warehouse

PHASE_SCRIPT = """
import json, resource, sys, time
from datetime import datetime
import duckdb
from cohortflow.dbt_manifest import ensure_manifest
from cohortflow.declarations import load_project_predictions
from ml.predictions import run_prediction
from ml.store import ModelStore

warehouse, store, name, as_of, retrain = sys.argv[1:6]
declaration = {p.name: p for p in load_project_predictions(json.loads(ensure_manifest().read_text()))}[name]
started = time.perf_counter()
con = duckdb.connect(warehouse)
run = run_prediction(con, declaration, as_of=datetime.fromisoformat(as_of), store=ModelStore(store),
                     retrain=retrain == "true")
con.close()
seconds = time.perf_counter() - started
print(json.dumps({
    "seconds": seconds,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "scored_users": run.scored_users,
    "retrained": run.retrained,
    "model": run.model_name,
    "auc": run.metrics.get("auc"),
    "calibration_error": run.metrics.get("calibration_error"),
    "examples": run.summary.get("examples"),
}))
"""


def built_warehouse(cache: Path, raw: Path, end: datetime) -> Path:
    """The raw warehouse with the whole dbt project built as of ``end`` (built once, then copied)."""
    path = cache / f"built-{raw.parent.name}-{end:%Y%m%d}" / WAREHOUSE_NAME
    if not (path.parent / ".complete").exists():
        shutil.rmtree(path.parent, ignore_errors=True)
        path.parent.mkdir(parents=True)
        shutil.copy(raw, path)
        print(f"building the dbt project as of {end} into {path} ...", flush=True)
        dbt(["build", "--exclude", "test_type:data"], path, end, path.parent / "dbt")
        (path.parent / ".complete").write_text("ok\n")
    return path


def dbt(args: list[str], warehouse: Path, as_of: datetime, scratch: Path) -> dict[str, Any]:
    env = {**os.environ, "COHORTFLOW_WAREHOUSE": str(warehouse), "COHORTFLOW_AS_OF": as_of.isoformat(),
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(
        [str(DBT), *args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
         "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs")],
        env=env, capture_output=True, text=True, check=False,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"dbt {' '.join(args)} failed:\n{proc.stdout[-4000:]}")
    results = json.loads((scratch / "target" / "run_results.json").read_text())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "seconds": seconds,
        "sql_seconds": sum(r["execution_time"] for r in results["results"]),
        # ru_maxrss of children is the largest child so far: only meaningful when dbt is the largest.
        "peak_rss_mib": peak / 1024 if peak > before else None,
    }


def phase(warehouse: Path, store: Path, name: str, as_of: datetime, retrain: bool) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", PHASE_SCRIPT, str(warehouse), str(store), name, as_of.isoformat(), str(retrain).lower()],
        capture_output=True, text=True, check=False, env={**os.environ, "COHORTFLOW_WAREHOUSE": str(warehouse)},
    )
    if proc.returncode != 0:
        raise SystemExit(f"run_prediction failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--end", type=datetime.fromisoformat, default=datetime(2025, 3, 3))
    parser.add_argument("--prediction", default="purchase_7d")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cohortflow-bench-segmentation")
    parser.add_argument("--json", action="store_true", help="print the raw measurements as JSON too")
    args = parser.parse_args()

    data = cached_data_set(args.cache, args.users, args.days, args.seed, args.end)
    raw = cached_raw_warehouse(args.cache, data)
    built = built_warehouse(args.cache, raw, args.end)
    if args.repeat < 1:
        print(f"prepared {built}")
        return
    events = None
    runs = []
    for repetition in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="bench-predictions-") as tmp:
            work = Path(tmp)
            warehouse = work / WAREHOUSE_NAME
            shutil.copy(built, warehouse)
            if events is None:
                import duckdb

                con = duckdb.connect(str(warehouse), read_only=True)
                events = con.execute("select count(*) from raw.events").fetchone()[0]
                con.close()
            features = dbt(["run", "--select", "prediction_features", "prediction_outcomes"], warehouse, args.end, work / "dbt")
            trained = phase(warehouse, work / "models", args.prediction, args.end, retrain=True)
            scored = phase(warehouse, work / "models", args.prediction, args.end, retrain=False)
        run = {"features": features, "train_and_score": trained, "score": scored,
               "total_seconds": features["seconds"] + trained["seconds"]}
        runs.append(run)
        print(
            f"run {repetition}: features {features['seconds']:.1f} s (SQL {features['sql_seconds']:.1f} s), "
            f"train + score {trained['seconds']:.1f} s ({trained['model']}, AUC {trained['auc']:.3f}, "
            f"{trained['scored_users']:,} users), total {run['total_seconds']:.1f} s; "
            f"score only {scored['seconds']:.1f} s; peak RSS train {trained['peak_rss_mib']:.0f} MiB, "
            f"score {scored['peak_rss_mib']:.0f} MiB",
            flush=True,
        )

    def median(path: list[str]) -> float:
        values = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value[key]
            values.append(value)
        return statistics.median(values)

    print()
    print(f"{args.users:,} users, {events:,} events, prediction {args.prediction}, {args.repeat} runs (medians):")
    print("| phase | wall | notes |")
    print("|---|---:|---|")
    print(f"| features, every cutoff (dbt run) | {median(['features', 'seconds']):.1f} s | SQL {median(['features', 'sql_seconds']):.1f} s |")
    print(f"| train + score | {median(['train_and_score', 'seconds']):.1f} s | peak RSS {median(['train_and_score', 'peak_rss_mib']):.0f} MiB |")
    print(f"| **features + train + score** | **{median(['total_seconds']):.1f} s** | target ≤ 60 s |")
    print(f"| **score only (hourly path)** | **{median(['score', 'seconds']):.1f} s** | target ≤ 10 s; peak RSS {median(['score', 'peak_rss_mib']):.0f} MiB |")
    if args.json:
        print(json.dumps(runs, indent=2, default=str))


if __name__ == "__main__":
    main()
