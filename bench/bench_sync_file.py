"""Benchmark: a 1,000,000-record sync to CSV — the first run, then runs with a 1 % diff.

Wall time is what a user waits; CPU time (all threads of the process) is printed too because
it is less disturbed by other work on a shared machine. Each measurement is the median of ``--repeat`` runs of ``run_sync`` (lock, plan, write the whole
file atomically with its manifest and changes file, mark the state), on a DuckDB file in a
temporary folder. The first-run repetitions each use a fresh sync name so each one really is a
first run; each diff repetition churns a different 1 % of the audience (0.4 % join, 0.3 % leave,
0.3 % change) before running.

Usage::

    .venv/bin/python bench/bench_sync_file.py [--rows 1000000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from reverse_etl import CsvFileDestination, SyncSpec, plan_sync, run_sync


def build_source(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    """A user-properties model of ``rows`` users, six typed columns."""
    con.execute("create schema if not exists properties")
    con.execute(
        f"""
        create or replace table properties.user_profile as
        select 'user_' || lpad(i::varchar, 8, '0') as user_id,
               'user' || i || '@example.com' as email,
               (['JP', 'FR', 'DE', 'US'])[1 + i % 4] as country,
               round((i % 1000) / 10.0, 1) as purchase_propensity,
               timestamp '2026-01-01' + to_seconds(i) as last_seen_at,
               i % 3 = 0 as has_marketing_consent
        from range({rows}) t(i)
        """
    )


def churn(con: duckdb.DuckDBPyConnection, rows: int, round_no: int) -> int:
    """Change 1 % of the audience: 0.4 % join, 0.3 % leave, 0.3 % change. Returns the diff size."""
    joins, leaves, changes = rows * 4 // 1000, rows * 3 // 1000, rows * 3 // 1000
    offset = rows * (round_no + 1)  # new ids never collide with earlier rounds
    con.execute(
        f"""
        insert into properties.user_profile
        select 'user_' || lpad((i + {offset})::varchar, 8, '0'), 'new' || i || '@example.com', 'JP', 1.0,
               timestamp '2026-02-01', true
        from range({joins}) t(i)
        """
    )
    # Leaves take even ids, changes odd ids, from a block of original users no earlier round touched,
    # so the three parts never overlap and every round is a true 1 % diff.
    base = round_no * max(leaves, changes)
    con.execute(
        f"delete from properties.user_profile where user_id in (select 'user_' || lpad((2 * ({base} + i))::varchar, 8, '0') "
        f"from range({leaves}) t(i))"
    )
    con.execute(
        f"update properties.user_profile set purchase_propensity = purchase_propensity + 0.5 "
        f"where user_id in (select 'user_' || lpad((2 * ({base} + i) + 1)::varchar, 8, '0') from range({changes}) t(i))"
    )
    return joins + leaves + changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_sync_file_") as folder:
        root = Path(folder)
        con = duckdb.connect(str(root / "warehouse.duckdb"))
        started = time.perf_counter()
        build_source(con, args.rows)
        build_s = time.perf_counter() - started

        first_runs, first_plans, first_cpu = [], [], []
        for rep in range(args.repeat):
            spec = SyncSpec(name=f"profile_first_{rep}", source_relation="properties.user_profile", primary_key=["user_id"])
            started = time.perf_counter()
            with plan_sync(con, spec):
                pass
            first_plans.append(time.perf_counter() - started)
            started, cpu = time.perf_counter(), time.process_time()
            result = run_sync(con, spec, CsvFileDestination(root / f"first_{rep}.csv"))
            first_runs.append(time.perf_counter() - started)
            first_cpu.append(time.process_time() - cpu)
            assert result.rows_added == args.rows, result.format_text()
        csv_bytes = (root / "first_0.csv").stat().st_size

        # The diff runs continue the first sync.
        spec = SyncSpec(name="profile_first_0", source_relation="properties.user_profile", primary_key=["user_id"])
        diff_runs, diff_plans, diff_sizes, diff_cpu = [], [], [], []
        for rep in range(args.repeat):
            expected = churn(con, args.rows, rep)
            started = time.perf_counter()
            with plan_sync(con, spec) as plan:
                diff_sizes.append(plan.adds + plan.changes + plan.removes)
            diff_plans.append(time.perf_counter() - started)
            started, cpu = time.perf_counter(), time.process_time()
            result = run_sync(con, spec, CsvFileDestination(root / "first_0.csv"))
            diff_runs.append(time.perf_counter() - started)
            diff_cpu.append(time.process_time() - cpu)
            assert result.rows_processed == expected, (result.format_text(), expected)
        con.close()

    report = {
        "rows": args.rows,
        "repeat": args.repeat,
        "build_source_s": round(build_s, 2),
        "csv_mb": round(csv_bytes / 1e6, 1),
        "first_sync_median_s": round(statistics.median(first_runs), 2),
        "first_sync_runs_s": [round(x, 2) for x in first_runs],
        "first_sync_cpu_median_s": round(statistics.median(first_cpu), 2),
        "first_plan_only_median_s": round(statistics.median(first_plans), 2),
        "diff_records": diff_sizes,
        "diff_sync_median_s": round(statistics.median(diff_runs), 2),
        "diff_sync_runs_s": [round(x, 2) for x in diff_runs],
        "diff_sync_cpu_median_s": round(statistics.median(diff_cpu), 2),
        "diff_plan_only_median_s": round(statistics.median(diff_plans), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.rows:,} records, CSV {report['csv_mb']} MB, median of {args.repeat}")
    print(f"  first sync (all adds):  {report['first_sync_median_s']} s  (CPU {report['first_sync_cpu_median_s']} s; plan alone {report['first_plan_only_median_s']} s)  runs {report['first_sync_runs_s']}")
    print(f"  1 % diff sync:          {report['diff_sync_median_s']} s  (CPU {report['diff_sync_cpu_median_s']} s; plan alone {report['diff_plan_only_median_s']} s)  runs {report['diff_sync_runs_s']}, diff {diff_sizes}")
    print(f"  peak RSS {report['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
