"""Benchmark: ``cohortflow.generate.generate`` — how long a sample data set takes, and its peak memory.

Each repetition runs in a fresh Python process (so the peak resident memory measured is that
run's alone, imports included) and writes into a temporary folder that is deleted afterwards.
Wall time is what a user waits; CPU time (all threads of the child process) is printed too
because it is less disturbed by other work on a shared machine. The report gives the median
of ``--repeat`` runs. ``--end`` is fixed by default so runs on different days compare.

Usage::

    .venv/bin/python bench/bench_generate.py [--users 100000] [--days 100] [--seed 42] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path


def run_once(users: int, days: int, seed: int, end: datetime, events_per_file: int) -> dict[str, float]:
    """Generate one data set in a temporary folder; return its measurements."""
    from cohortflow.generate import generate  # imported here: the import is part of the child's memory

    with tempfile.TemporaryDirectory(prefix="bench_generate_") as folder:
        cpu_start = time.process_time()
        wall_start = time.perf_counter()
        summary = generate(folder, users=users, days=days, seed=seed, end=end, events_per_file=events_per_file)
        wall = time.perf_counter() - wall_start
        cpu = time.process_time() - cpu_start
        event_bytes = sum(p.stat().st_size for p in summary.event_paths)
        n_files = len(summary.event_paths)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "n_events": summary.n_events,
        "n_items": summary.n_items,
        "n_event_files": n_files,
        "event_file_mib": event_bytes / 2**20,
        "peak_rss_mib": peak_kib / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--end", default="2025-03-03", help="end of the period (UTC date), default 2025-03-03")
    parser.add_argument("--events-per-file", type=int, default=2_000_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    end = datetime.fromisoformat(args.end)

    if args.child:
        print(json.dumps(run_once(args.users, args.days, args.seed, end, args.events_per_file)))
        return

    runs = []
    for _ in range(args.repeat):
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", *sys.argv[1:]],
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))

    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    result = {
        "users": args.users,
        "days": args.days,
        "seed": args.seed,
        "repeat": args.repeat,
        "n_events": runs[0]["n_events"],
        "n_items": runs[0]["n_items"],
        "n_event_files": runs[0]["n_event_files"],
        "event_file_mib": round(runs[0]["event_file_mib"], 1),
        "median_wall_s": round(wall, 2),
        "median_cpu_s": round(cpu, 2),
        "events_per_s": round(runs[0]["n_events"] / wall),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs)),
        "wall_s_each": [round(r["wall_s"], 2) for r in runs],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"generate: {args.users:,} users x {args.days} days (seed {args.seed}) -> {result['n_events']:,} events, "
        f"{result['n_items']:,} items, {result['n_event_files']} event files ({result['event_file_mib']} MiB gzipped)\n"
        f"  median of {args.repeat}: {wall:.2f} s wall, {cpu:.2f} s CPU, {result['events_per_s']:,} events/s; "
        f"peak memory {result['peak_rss_mib']:,} MiB\n"
        f"  each run (wall s): {result['wall_s_each']}"
    )


if __name__ == "__main__":
    main()
