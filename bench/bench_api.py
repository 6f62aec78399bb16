"""Benchmark: the serving API at 100k profiles — publish cost, Profile API latency / throughput, events/s.

Targets (issue 12): profiles p99 ≤ 10 ms at ≥ 500 requests/s; the event endpoint ≥ 20,000 events/s
acknowledged. Server and load generator share this machine (2 cores): the numbers are for both on it.

Data: the generated data set of ``bench/bench_segmentation.py`` (100,000 users × 100 days, seed 42,
~9.7M events), ingested by its cache; then, once (cached), one whole ``cohortflow run`` as of ``--end``
on a copy — dbt, every prediction, the recommendation, the syncs and the serving snapshot — so the API
serves what a real run publishes. Then:

1. **publish**: ``publish_snapshot`` from that warehouse, ``--repeat`` times (median seconds, rows).
2. **profiles, saturated**: ``wrk`` (C, closed loop; Debian package ``wrk``) with a Lua script asking
   for a random one of the 100k users with every part (amp_props, computations, cohort ids,
   recommendations, propensities): requests/s and latency percentiles.
3. **profiles, at a fixed rate**: ``hey -q`` (Go; Debian package ``hey``) at ``--rate`` requests/s
   (one user, every part): latency percentiles at that rate.
4. **events**: ``wrk`` posting 2,000-event batches (Amplitude HTTP V2 bodies) to ``/2/httpapi``: each
   200 is a batch fsync'd to the landing folder, so events/s = acknowledged batches/s × 2,000.

    python bench/bench_api.py [--users 100000] [--repeat 3] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_segmentation import WAREHOUSE_NAME, cached_data_set, cached_raw_warehouse  # noqa: E402

from cohortflow.serving.snapshot import POINTER, attribute_columns, publish_snapshot  # noqa: E402

BIN = Path(sys.executable).parent
PROFILE_QUERY = (
    "get_amp_props=true&get_computations=true&get_cohort_ids=true&get_recs=true&rec_id=products_for_you"
    "&get_propensity=true&prediction_id=purchase_7d,churn_30d&propensity_type=pct"
)
PROFILE_LUA = """
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
wrk.headers["Authorization"] = "Api-Key %(key)s"
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/v1/userprofile?user_id=" .. id .. "&%(query)s")
end
"""
EVENTS_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("%(body)s", "rb"); wrk.body = f:read("*a"); f:close()
"""


def served_world(cache: Path, users: int, days: int, seed: int, end: datetime) -> Path:
    """The 100k warehouse after one whole `cohortflow run` as of ``end`` (built once, cached)."""
    data = cached_data_set(cache, users, days, seed, end)
    raw = cached_raw_warehouse(cache, data)
    world = cache / f"api-{raw.parent.name}" / WAREHOUSE_NAME
    if not (world.parent / ".complete").exists():
        shutil.rmtree(world.parent, ignore_errors=True)
        world.parent.mkdir(parents=True)
        shutil.copy(raw, world)
        home = world.parent / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        print(f"running the whole pipeline on {world} as of {end:%Y-%m-%d} ...", flush=True)
        started = time.perf_counter()
        subprocess.run(
            [str(BIN / "cohortflow"), "--warehouse", str(world), "run", "--as-of", end.isoformat()],
            check=True, env={**os.environ, "DAGSTER_HOME": str(home)},
        )
        print(f"pipeline done in {time.perf_counter() - started:.0f} s", flush=True)
        (world.parent / ".complete").write_text("ok\n")
    return world


def measure_publish(world: Path, repeat: int) -> dict[str, Any]:
    from cohortflow.dbt_manifest import ensure_manifest

    attributes = attribute_columns(json.loads(ensure_manifest().read_text()))
    con = duckdb.connect(str(world), read_only=True)
    seconds, rows = [], {}
    try:
        for _ in range(repeat):
            published = publish_snapshot(con, world.parent / "serving", attributes=attributes, keep=3)
            seconds.append(published.seconds)
            rows = dict(published.rows)
    finally:
        con.close()
    size = (world.parent / "serving" / json.loads((world.parent / "serving" / POINTER).read_text())["file"]).stat().st_size
    return {"median_s": statistics.median(seconds), "runs_s": seconds, "rows": rows,
            "snapshot_mb": round(size / 2**20, 1), "warehouse_mb": round(world.stat().st_size / 2**20, 1)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(world: Path, key: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    config = workdir / "serving.yml"
    config.write_text("api_keys:\n  - name: bench\n    key_env: BENCH_KEY\n"
                      "    scopes: [read:profiles, read:cohorts, write:cohorts, write:events]\n"
                      "    rate_limit: 100000000/minute\n")
    port = free_port()
    env = {**os.environ, "BENCH_KEY": key, "COHORTFLOW_SERVING_CONFIG": str(config), "COHORTFLOW_WAREHOUSE": str(world)}
    process = subprocess.Popen([str(BIN / "cohortflow"), "serve", "--port", str(port)], env=env,
                               stdout=open(workdir / "server.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError((workdir / "server.log").read_text()[-2000:])


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, Any]:
    percentiles = {f"p{p}_ms": float(v) * _UNITS[u] for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    return {"requests_per_s": rps, **percentiles, "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": errors.group(0) if errors else ""}


def parse_hey(output: str) -> dict[str, Any]:
    found = {f"p{p}_ms": float(v) * 1000 for p, v in re.findall(r"^\s+(50|90|99)%+ in ([\d.]+) secs", output, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    statuses = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", output))
    return {"requests_per_s": rps, **found, "statuses": statuses}


def events_body(path: Path, key: str, batch: int = 2000) -> None:
    now = int(time.time() * 1000)
    events = [
        {"user_id": f"bench-user-{i % 5000:05d}", "event_type": "view_item", "time": now - i,
         "insert_id": f"bench-{secrets.token_hex(6)}-{i}",
         "event_properties": {"item_id": f"sku-{i % 20000:05d}", "category": "books", "price": 12.5},
         "platform": "Web"}
        for i in range(batch)
    ]
    path.write_text(json.dumps({"api_key": key, "events": events}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--end", type=datetime.fromisoformat, default=datetime(2025, 3, 3))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=int, default=500, help="fixed request rate for hey (requests/s)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cohortflow-bench-segmentation")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install -y wrk hey")

    world = served_world(args.cache, args.users, args.days, args.seed, args.end)
    result: dict[str, Any] = {"users": args.users, "machine": os.uname().nodename, "cpus": os.cpu_count(),
                              "date": datetime.now().isoformat(timespec="seconds")}
    result["publish"] = measure_publish(world, args.repeat)
    print("publish:", result["publish"], flush=True)

    key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        snapshot = world.parent / "serving" / json.loads((world.parent / "serving" / POINTER).read_text())["file"]
        with sqlite3.connect(snapshot) as db:
            ids = [row[0] for row in db.execute("select user_id from users")]
        (scratch / "ids.txt").write_text("\n".join(ids) + "\n")
        (scratch / "profile.lua").write_text(PROFILE_LUA % {"ids": scratch / "ids.txt", "key": key, "query": PROFILE_QUERY})
        events_body(scratch / "events.json", key)
        (scratch / "events.lua").write_text(EVENTS_LUA % {"body": scratch / "events.json"})
        landing = world.parent / "landing"
        shutil.rmtree(landing, ignore_errors=True)
        process, url = start_server(world, key, scratch)
        try:
            sample = httpx.get(f"{url}/v1/userprofile?user_id={ids[0]}&{PROFILE_QUERY}",
                               headers={"Authorization": f"Api-Key {key}"}).json()
            assert sample["userData"]["amp_props"] is not None, sample
            result["sample_parts"] = {k: (v is not None and v != []) for k, v in sample["userData"].items()}
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                                      "-s", str(scratch / "profile.lua"), url], capture_output=True, text=True, check=True).stdout
                runs.append(parse_wrk(out))
            result["profiles_saturated"] = {"runs": runs, **{k: statistics.median(r[k] for r in runs)
                                                            for k in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms")}}
            print("profiles, saturated:", result["profiles_saturated"], flush=True)
            workers = 10
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(["hey", "-z", f"{args.seconds}s", "-c", str(workers), "-q", str(args.rate // workers),
                                      "-H", f"Authorization: Api-Key {key}", f"{url}/v1/userprofile?user_id={ids[0]}&{PROFILE_QUERY}"],
                                     capture_output=True, text=True, check=True).stdout
                runs.append(parse_hey(out))
            result["profiles_fixed_rate"] = {"target_rate": args.rate, "runs": runs,
                                             **{k: statistics.median(r[k] for r in runs) for k in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms")}}
            print("profiles, fixed rate:", result["profiles_fixed_rate"], flush=True)
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(["wrk", "-t1", "-c2", f"-d{args.seconds}s", "--latency", "-s", str(scratch / "events.lua"),
                                      f"{url}/2/httpapi"], capture_output=True, text=True, check=True).stdout
                runs.append(parse_wrk(out))
            events_per_s = [r["requests_per_s"] * 2000 for r in runs]
            result["events"] = {"runs": runs, "events_per_s": statistics.median(events_per_s),
                                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                                "p99_ms": statistics.median(r["p99_ms"] for r in runs)}
            print("events:", {k: v for k, v in result["events"].items() if k != "runs"}, flush=True)
        finally:
            process.terminate()
            process.wait(10)
            shutil.rmtree(landing, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
