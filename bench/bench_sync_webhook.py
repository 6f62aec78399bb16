"""Benchmark: webhook sync throughput, unthrottled and at a destination's rate limit.

Each repetition is a real first sync (``run_sync``: lock, plan, outbox, send, mark) of a fresh sync
name from a DuckDB warehouse file to the project's ``WebhookEmulator``, which runs in its own process
(``receiver`` sub-command of this script) so that it does not share the client's GIL. The destination
is built from ``destinations.yml``-style settings, as a user's would be. After every run the receiver
must hold exactly the audience (else the script fails).

(a) unthrottled: ``--records`` (100,000) users in batches of ``--batch`` (10,000) users per request,
    then of ``--small-batch`` (1,000), no pacing, no rate limit. Each against the emulator as shipped,
    and with TCP_NODELAY on its sockets (the emulator writes headers and body in two sends: with Nagle's algorithm each answer
    waits for the client's delayed ACK, ~40 ms per request on a kept-alive connection).
(b) at a rate limit: the emulator allows ``--limit`` requests per second (sliding 1 s window, 429 +
    ``Retry-After`` beyond), ``--limited-records`` users in batches of ``--limited-batch``:
    - matched: the destination's ``max_requests_per_second`` = the limit (client-side pacing);
    - over: the destination's setting is twice the emulator's limit, so the 429 + ``Retry-After``
      answers pace the run. Retries use the destination defaults (0.5 s base backoff, 5 attempts).
    The theoretical ceiling is ``limit x batch`` records per second.

Wall time is what a user waits; CPU time (all threads) of the sync process and of the receiver is
printed too. Each figure is the median of ``--repeat`` runs (all runs are printed).

Usage::

    .venv/bin/python bench/bench_sync_webhook.py [--records 100000] [--batch 10000] [--limit 10]
        [--limited-records 50000] [--limited-batch 1000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO_ROOT = HERE.parents[1]
SECRET = "bench-webhook-secret-8c41"


# --- the receiver process ----------------------------------------------------------------------------


def receiver_main(argv: list[str]) -> int:
    """``receiver [--rate-limit N] [--max-users M] [--nodelay]``: print the URL, answer ``stats <cohort>``."""
    parser = argparse.ArgumentParser(prog="bench_sync_webhook.py receiver")
    parser.add_argument("--rate-limit", type=int, default=None)
    parser.add_argument("--max-users", type=int, default=10_000)
    parser.add_argument("--nodelay", action="store_true")
    args = parser.parse_args(argv)

    from reverse_etl.emulators.base import Faults
    from reverse_etl.emulators.webhook import WebhookEmulator

    class Receiver(WebhookEmulator):
        nodelay = args.nodelay
        throttled = 0

        def throttle_reply(self, wait: float | None, *, message: str = "rate limit exceeded") -> Any:
            self.throttled += 1  # called under the emulator's lock
            return super().throttle_reply(wait, message=message)

        def _serve(self, handler: Any) -> None:
            if self.nodelay:
                handler.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super()._serve(handler)

    faults = Faults(rate_limit=args.rate_limit, rate_window=1.0) if args.rate_limit else Faults()
    receiver = Receiver(secret=SECRET, max_users=args.max_users, faults=faults)
    with receiver:
        print(receiver.url, flush=True)
        for line in sys.stdin:
            command, cohort, since = (line.split() + ["", "", "0"])[:3]
            if command != "stats":
                continue
            usage = resource.getrusage(resource.RUSAGE_SELF)
            with receiver.lock:
                requests = len(receiver.requests)
                committed = len(receiver.committed())
                times = [r.received_at for r in receiver.requests[int(since):]]
                answered_429 = receiver.throttled
            members = receiver.members(cohort)
            print(json.dumps({
                "members": len(members), "requests": requests, "answered_429": answered_429,
                "span_s": (max(times) - min(times)) if times else 0.0,
                "committed": committed, "signature_failures": receiver.signature_failures,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
            }), flush=True)
    return 0


class ReceiverProcess:
    def __init__(self, *, rate_limit: int | None, max_users: int, nodelay: bool) -> None:
        command = [sys.executable, str(HERE), "receiver", "--max-users", str(max_users)]
        if rate_limit:
            command += ["--rate-limit", str(rate_limit)]
        if nodelay:
            command.append("--nodelay")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"receiver did not start: {self.url!r}")

    def stats(self, cohort: str, since: int = 0) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"stats {cohort} {since}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# --- the sync side ---------------------------------------------------------------------------------------


def build_warehouse(path: Path, records: int) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("create schema if not exists cohorts")
    con.execute(
        f"""
        create or replace table cohorts.audience as
        select 'user_' || lpad(i::varchar, 8, '0') as user_id,
               'user' || i || '@example.com' as email,
               (['free', 'pro', 'team'])[1 + i % 3] as plan,
               round((i % 100000) / 7.0, 2) as ltv,
               (i % 400)::integer as visits,
               timestamp '2026-01-01' + to_seconds(i) as last_seen_at
        from range({records}) t(i)
        """
    )
    con.close()


def one_sync(warehouse: Path, receiver: ReceiverProcess, *, name: str, batch: int, rate: float | None,
             records: int) -> dict[str, Any]:
    """One first sync of ``name``; returns wall / CPU time and the sender's counters."""
    import duckdb

    from reverse_etl import SyncSpec, run_sync
    from reverse_etl.destinations import destination_class

    settings: dict[str, Any] = {"type": "webhook", "url": receiver.url + "/cohorts", "secret": SECRET,
                                "max_batch_size": batch, "timeout": 30}
    if rate is not None:
        settings["max_requests_per_second"] = rate
    destination = destination_class("webhook").from_settings(settings, sync_name=name)
    spec = SyncSpec(name=name, source_relation="cohorts.audience", primary_key=["user_id"], mode="mirror",
                    identifiers={"user_id": "user_id"}, batch_size=batch)
    con = duckdb.connect(str(warehouse))
    before = receiver.stats(name)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        result = run_sync(con, spec, destination, lock_dir=warehouse.parent / "locks")
    finally:
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        con.close()
    after = receiver.stats(name, before["requests"])
    if result.status != "succeeded" or result.rows_added != records or after["members"] != records:
        raise SystemExit(f"{name}: {result.status}, added {result.rows_added}, receiver holds {after['members']} of {records}")
    if after["signature_failures"]:
        raise SystemExit(f"{name}: {after['signature_failures']} signature failures")
    stats = destination.stats.as_dict()
    return {
        "wall_s": wall, "cpu_s": cpu, "records_per_s": records / wall, "requests": stats["requests"],
        "throttled_429": stats["throttled"], "retries": stats["retries"], "retry_wait_s": stats["retry_wait_seconds"],
        "pacing_wait_s": stats["pacing_wait_seconds"], "receiver_cpu_s": after["cpu_seconds"] - before["cpu_seconds"],
        "receiver_requests": after["requests"] - before["requests"], "receiver_429": after["answered_429"] - before["answered_429"],
        # Requests per second while sending: accepted requests over the time from the first request
        # to the last one the receiver got (planning and marking left out).
        "send_phase_rps": (after["committed"] - before["committed"] - 1) / after["span_s"] if after["span_s"] else 0.0,
    }


def scenario(label: str, warehouse: Path, *, records: int, batch: int, repeat: int, rate_limit: int | None,
             client_rate: float | None, nodelay: bool) -> dict[str, Any]:
    runs = []
    for rep in range(repeat):
        receiver = ReceiverProcess(rate_limit=rate_limit, max_users=batch, nodelay=nodelay)
        try:
            name = f"bench_{label}_{rep}_{int(time.time() * 1000) % 10**9}"
            runs.append(one_sync(warehouse, receiver, name=name, batch=batch, rate=client_rate, records=records))
        finally:
            receiver.stop()
        print(f"  {label} run {rep + 1}: {runs[-1]['wall_s']:.2f} s, {runs[-1]['records_per_s']:,.0f} records/s, "
              f"{runs[-1]['requests']} requests, 429s {runs[-1]['throttled_429']}, retries {runs[-1]['retries']}", flush=True)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    theoretical = rate_limit * batch if rate_limit else None
    return {"label": label, "records": records, "batch": batch, "receiver_limit_rps": rate_limit,
            "destination_rps": client_rate, "nodelay": nodelay, "theoretical_records_per_s": theoretical,
            "median": median, "runs": runs}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gib": round(mem_kb / 2**20, 1),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "python": sys.version.split()[0],
            "at": datetime.now().isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["receiver"]:
        return receiver_main(argv[1:])
    parser = argparse.ArgumentParser(description="Webhook sync throughput, unthrottled and rate-limited.")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--small-batch", type=int, default=1_000, help="second unthrottled batch size (Nagle effect)")
    parser.add_argument("--limit", type=int, default=10, help="receiver's requests per second in (b)")
    parser.add_argument("--limited-records", type=int, default=50_000)
    parser.add_argument("--limited-batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("a", "b"), default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    start_machine = machine()
    print(f"machine: {start_machine}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="cohortflow-bench-webhook-") as tmp:
        warehouse = Path(tmp) / "warehouse.duckdb"
        if args.only in (None, "a"):
            build_warehouse(warehouse, args.records)
            for batch in (args.batch, args.small_batch):
                for nodelay in (False, True):
                    label = f"unthrottled_{batch}" + ("_nodelay" if nodelay else "")
                    results.append(scenario(label, warehouse, records=args.records, batch=batch, repeat=args.repeat,
                                            rate_limit=None, client_rate=0, nodelay=nodelay))
        if args.only in (None, "b"):
            build_warehouse(warehouse, args.limited_records)
            results.append(scenario("at_limit", warehouse, records=args.limited_records, batch=args.limited_batch,
                                    repeat=args.repeat, rate_limit=args.limit, client_rate=args.limit, nodelay=False))
            results.append(scenario("over_limit", warehouse, records=args.limited_records, batch=args.limited_batch,
                                    repeat=args.repeat, rate_limit=args.limit, client_rate=2 * args.limit, nodelay=False))
    end_machine = machine()
    print()
    print("| case | records | users / request | receiver limit | destination pace | median wall | records/s | "
          "ceiling | requests/s while sending | 429s | retries | sync CPU | receiver CPU | runs (wall s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        m = r["median"]
        ceiling = f"{r['theoretical_records_per_s']:,}" if r["theoretical_records_per_s"] else "-"
        limit = f"{r['receiver_limit_rps']} req/s" if r["receiver_limit_rps"] else "none"
        pace = f"{r['destination_rps']:g} req/s" if r["destination_rps"] else "none"
        label = r["label"] + (" (TCP_NODELAY)" if r["nodelay"] else "")
        walls = ", ".join(f"{x['wall_s']:.2f}" for x in r["runs"])
        print(f"| {label} | {r['records']:,} | {r['batch']:,} | {limit} | {pace} | {m['wall_s']:.2f} s | "
              f"{m['records_per_s']:,.0f} | {ceiling} | {m['send_phase_rps']:.1f} | {m['throttled_429']:g} | {m['retries']:g} | {m['cpu_s']:.2f} s | "
              f"{m['receiver_cpu_s']:.2f} s | {walls} |")
    print(f"\nload average at the end: {end_machine['load_avg']}")
    if args.json:
        print(json.dumps({"machine_start": start_machine, "machine_end": end_machine, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
