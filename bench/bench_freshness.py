"""Benchmark: how fresh is "right time"? An event posted → the cohort it changes → a webhook destination.

Issue 12 asks for p50 / p95 seconds at 100k users. On a copy of the 100k-user world of
``bench/bench_api.py`` (one whole run as of ``--end``, cached):

- ``cohortflow serve`` (a subprocess) takes events on ``POST /2/httpapi``;
- a signed webhook receiver (``reverse_etl.emulators.webhook``) on 127.0.0.1 stands in for the destination
  of ``cart_abandoners_24h_to_webhook``;
- a poster sends, at random moments (exponential gaps, mean ``--gap`` s), an ``add_to_cart`` for a
  consented user who is not a cart abandoner and bought nothing in the last days, and notes when the
  API acknowledged it;
- a runner does what the every-minute schedule does — at each wall-clock minute, unless the previous run
  is still going (then at the next minute after it), it runs the every-minute selection (landed events
  → every dbt model → serving snapshot) plus that webhook sync, as of the tick — in this process with
  ``execute_in_process`` like ``cohortflow run``;
- a watcher polls the receiver every 0.2 s and notes when each posted user arrives in the cohort.

The world's data ends on ``--end`` (a past date), so the clock is shifted: every as_of and event time is
``--end`` + the wall time elapsed since the start. Freshness = arrival at the receiver − acknowledgement.

    python bench/bench_freshness.py [--minutes 8] [--gap 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_api import served_world  # noqa: E402

BIN = Path(sys.executable).parent
COHORT_ID = "cart_abandoners_24h"
SYNC = "cart_abandoners_24h_to_webhook"


def candidates(world: Path, end: datetime, count: int) -> list[str]:
    con = duckdb.connect(str(world), read_only=True)
    try:
        rows = con.execute(
            """
            select user_id from marts.user_properties
            where has_marketing_consent
              and (last_purchase_at is null or last_purchase_at < ?::timestamp - interval 3 day)
              and user_id not in (select user_id from marts.cohort_memberships where cohort_id = ?)
            order by hash(user_id) limit ?
            """,
            [end, COHORT_ID, count],
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--end", type=datetime.fromisoformat, default=datetime(2025, 3, 3))
    parser.add_argument("--minutes", type=float, default=8.0, help="how long to post events")
    parser.add_argument("--gap", type=float, default=15.0, help="mean seconds between posted events")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cohortflow-bench-segmentation")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    world = served_world(args.cache, args.users, 100, 42, args.end)
    scratch = Path(tempfile.mkdtemp(prefix="cohortflow-freshness-"))
    copy = scratch / "world" / world.name
    shutil.copytree(world.parent, copy.parent, ignore=shutil.ignore_patterns("*.locks", "logs", "dagster_home"))
    home = scratch / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    users = candidates(copy, args.end, 400)
    random.Random(7).shuffle(users)

    from reverse_etl.emulators.webhook import WebhookEmulator

    secret = secrets.token_hex(16)
    key = secrets.token_urlsafe(24)
    os.environ.update({"COHORTFLOW_WAREHOUSE": str(copy), "DAGSTER_HOME": str(home), "COHORTFLOW_WEBHOOK_SECRET": secret})
    receiver = WebhookEmulator(secret=secret)
    receiver.start()
    os.environ["COHORTFLOW_WEBHOOK_URL"] = f"{receiver.url}/cohortflow/webhook"

    config = scratch / "serving.yml"
    config.write_text("api_keys:\n  - name: bench\n    key_env: BENCH_KEY\n    scopes: [write:events]\n"
                      "    rate_limit: 100000/minute\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(BIN / "cohortflow"), "serve", "--port", str(port)],
                              env={**os.environ, "BENCH_KEY": key, "COHORTFLOW_SERVING_CONFIG": str(config)},
                              stdout=open(scratch / "server.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)

    import dagster as dg

    from cohortflow.as_of import format_as_of
    from cohortflow.pipeline import ensure_dagster_home
    from orchestration.definitions import MINUTE_SELECTION, defs, run_config_for, sync_declarations
    from orchestration.syncs import sync_key

    ensure_dagster_home()
    webhook = next(d for d in sync_declarations if d.name == SYNC)
    selection = [*MINUTE_SELECTION, sync_key(webhook)]
    # The main job leaves on-demand syncs out; the implicit job of every asset has them all.
    job = defs.resolve_implicit_global_asset_job_def()
    started_wall = time.time()
    offset = args.end - datetime.utcfromtimestamp(started_wall)

    def simulated(wall: float) -> datetime:
        return datetime.utcfromtimestamp(wall) + offset

    posted: dict[str, float] = {}
    arrived: dict[str, float] = {}
    runs: list[dict[str, Any]] = []
    stop = threading.Event()

    def poster() -> None:
        rng = random.Random(11)
        deadline = started_wall + args.minutes * 60
        with httpx.Client(base_url=url, timeout=30) as client:
            for user_id in users:
                stop.wait(rng.expovariate(1 / args.gap))
                if stop.is_set() or time.time() > deadline:
                    return
                moment = simulated(time.time())
                event = {"user_id": user_id, "event_type": "add_to_cart", "time": int((moment - datetime(1970, 1, 1)).total_seconds() * 1000),
                         "insert_id": f"fresh-{user_id}-{secrets.token_hex(4)}",
                         "event_properties": {"item_id": "sku-00042", "category": "accessories", "price": 18.99, "quantity": 1}}
                answer = client.post("/2/httpapi", json={"api_key": key, "events": [event]})
                if answer.status_code == 200:
                    posted[user_id] = time.time()
                else:
                    print("post refused:", answer.status_code, answer.text[:200], flush=True)

    def watcher() -> None:
        while not stop.is_set():
            members = receiver.members(SYNC)  # the webhook's cohort_id is the sync's name (destinations.yml sets none)
            now = time.time()
            for user_id in list(posted):
                if user_id in members and user_id not in arrived:
                    arrived[user_id] = now
            time.sleep(0.2)

    threads = [threading.Thread(target=poster), threading.Thread(target=watcher)]
    for thread in threads:
        thread.start()
    last_post_deadline = started_wall + args.minutes * 60
    with dg.DagsterInstance.get() as instance:
        while True:
            now = time.time()
            if now > last_post_deadline and all(u in arrived for u in posted):
                break
            if now > last_post_deadline + 600:
                print("giving up waiting for", [u for u in posted if u not in arrived], flush=True)
                break
            tick = (int(now) // 60 + 1) * 60  # the next minute boundary
            time.sleep(max(0.0, tick - time.time()))
            as_of = format_as_of(simulated(tick))
            run_started = time.time()
            result = job.execute_in_process(run_config=run_config_for(as_of), instance=instance, raise_on_error=False,
                                            asset_selection=selection, tags={"as_of": as_of})
            runs.append({"tick": tick, "as_of": as_of, "seconds": time.time() - run_started, "success": result.success})
            print(f"run as of {as_of}: {time.time() - run_started:.1f} s, success={result.success}; "
                  f"{len(posted)} posted, {len(arrived)} arrived", flush=True)
    stop.set()
    for thread in threads:
        thread.join()
    server.terminate()
    receiver.stop()

    latencies = [arrived[u] - posted[u] for u in posted if u in arrived]
    run_seconds = [r["seconds"] for r in runs]
    result_json = {
        "users": args.users, "date": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "posted": len(posted), "arrived": len(latencies),
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": percentile(latencies, 0.95) if latencies else None,
        "max_s": max(latencies) if latencies else None,
        "run_median_s": statistics.median(run_seconds) if run_seconds else None,
        "runs": len(runs), "failed_runs": sum(1 for r in runs if not r["success"]),
    }
    print("freshness:", result_json, flush=True)
    if args.json:
        print(json.dumps({**result_json, "latencies_s": latencies, "run_seconds": run_seconds}, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
