"""Benchmark `ingest --format amplitude-export`: events per second on a generated export file.

Writes a gzipped Amplitude export file of N events (DuckDB COPY, a few seconds), then ingests it
into a fresh warehouse file R times and prints each run and the median.

    .venv/bin/python bench/bench_ingest.py               # 2,000,000 events, 3 runs
    .venv/bin/python bench/bench_ingest.py --events 1000000 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import duckdb

from cohortflow.ingest import ingest_files
from cohortflow.warehouse import connect


def write_export(path: Path, events: int, *, duplicate_every: int = 1000, bad_every: int = 5000) -> None:
    """A realistic export file: 4 event types, 50k users, 5k items, some retries and some bad rows.

    Every ``duplicate_every``-th event repeats an earlier ``$insert_id`` (a retried upload) and every
    ``bad_every``-th has a too-short user_id, so that the dedupe and rejection paths are measured too.
    """
    con = duckdb.connect()
    con.execute(f"""
        copy (
            select case when i % {duplicate_every} = 999 then 'ins-' || (i - 500) else 'ins-' || i end as "$insert_id",
                   case when i % {bad_every} = 1 then 'u' || (i % 10) else 'user-' || lpad((i % 50000)::varchar, 6, '0') end
                       as user_id,
                   'device-' || (i % 70000) as device_id,
                   (['session_start', 'view_item', 'add_to_cart', 'purchase'])[1 + (i % 4)::int] as event_type,
                   strftime(timestamp '2024-01-01' + to_milliseconds(i * 1000), '%Y-%m-%d %H:%M:%S.%f') as event_time,
                   json_object('item_id', 'sku-' || (i % 5000), 'price', (i % 100) / 4.0, 'quantity', 1 + i % 3)::json
                       as event_properties,
                   json_object('plan', (['free', 'pro'])[1 + (i % 2)::int])::json as user_properties,
                   1704067200000 + (i // 20) * 60000 as session_id,
                   '10.0.' || (i % 250) || '.1' as ip_address, '2.3.1' as version_name, 'Web' as platform
            from range({events}) t(i)
        ) to '{path}' (format json, compression gzip)""")
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        folder = Path(tmp)
        export = folder / "export.json.gz"
        started = time.perf_counter()
        write_export(export, args.events)
        print(f"wrote {args.events:,} events ({export.stat().st_size / 1e6:.0f} MB gzipped) "
              f"in {time.perf_counter() - started:.1f} s")
        rates = []
        for run in range(1, args.runs + 1):
            con = connect(folder / f"run{run}.duckdb")
            started = time.perf_counter()
            summary = ingest_files(con, [export], "amplitude-export", now=datetime(2024, 6, 1))
            seconds = time.perf_counter() - started
            con.close()
            (folder / f"run{run}.duckdb").unlink()
            rates.append(summary.rows_read / seconds)
            print(f"run {run}: {seconds:.1f} s, {rates[-1]:,.0f} events/s "
                  f"({summary.rows_loaded:,} loaded, {summary.rows_duplicate:,} duplicate, "
                  f"{summary.rows_rejected:,} rejected)")
        print(f"median: {statistics.median(rates):,.0f} events/s over {args.runs} runs of {args.events:,} events")


if __name__ == "__main__":
    main()
