"""Soak: a webhook sync SIGKILLed, faulted and churned for many runs must never lose, duplicate or leak.

The long version of ``tests/integration/test_sync_faults.py`` (same harness,
``tests/integration/sync_faults_harness.py``; nothing mocked): a DuckDB warehouse file with
``--records`` audience rows; the project's ``WebhookEmulator`` on 127.0.0.1 faulting ``--fault-rate``
of its batch requests (25 % of the faults 503, 20 % 429 + ``Retry-After``, 20 % connection dropped
before applying, 20 % dropped after applying, 15 % answer held past the client's timeout after
applying), refusing ``--poison`` users (a whole-batch 400); the sync in a separate process, built
from webhook settings (``--batch-size`` users per request, 0.3 s timeout, 4 attempts), run ``--runs``
times with ``--churn`` of the audience changed before each run after the first. ``--kills`` of those
runs are SIGKILLed (cycling through: while waiting for the N-th answer before / after the receiver
applied it, a few ms after an answer, a random delay into the run) and ``--failing-runs`` are made
to fail (answer lost, then 5xx until the retries run out), spread at random (seeded). Then runs
without kills until one succeeds, and a run with nothing to do that must send nothing.

It prints the violations of each promise (must be 0: the exit code is 1 otherwise) and what the soak
went through: kills, faults by kind, replays, retries, time.

Usage::

    .venv/bin/python bench/bench_sync_faults.py --runs 50 --records 20000
    .venv/bin/python bench/bench_sync_faults.py --runs 200 --records 5000 --kills 120 --fault-rate 0.2 --seed 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "tests" / "integration"))

import sync_faults_harness as harness  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="scheduled runs (the first loads the audience)")
    parser.add_argument("--records", type=int, default=20_000, help="initial audience size")
    parser.add_argument("--kills", type=int, default=None, help="runs SIGKILLed (default: half of --runs)")
    parser.add_argument("--failing-runs", type=int, default=None, help="runs made to fail (default: --runs / 10)")
    parser.add_argument("--fault-rate", type=float, default=0.10, help="share of batch requests faulted")
    parser.add_argument("--batch-size", type=int, default=100, help="users per webhook request")
    parser.add_argument("--churn", type=float, default=0.02, help="share of the audience touched before each run")
    parser.add_argument("--poison", type=int, default=3, help="users the receiver refuses (whole-batch 400)")
    parser.add_argument("--timed-kill-max", type=float, default=0.5, help="latest 'timed' kill, seconds into a run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="keep the warehouse and the process log in this folder")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON too")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per run")
    args = parser.parse_args(argv)

    kills = args.runs // 2 if args.kills is None else args.kills
    failing = max(1, args.runs // 10) if args.failing_runs is None else args.failing_runs
    poison = tuple(sorted(harness.user_id(n) for n in random.Random(args.seed).sample(range(args.records), min(args.poison, args.records))))
    scenario = harness.Scenario(
        seed=args.seed, users=args.records, batch_size=args.batch_size, fault_rate=args.fault_rate, runs=args.runs,
        kills=kills, failing_runs=failing, shuffle=True, churn_share=args.churn, poison=poison,
        timed_kill_max=args.timed_kill_max, run_timeout=600.0, max_finishing_runs=20, verbose=args.verbose,
    )
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        workdir, cleanup = args.keep, None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="cohortflow-sync-faults-")
        workdir = Path(cleanup.name)
    try:
        out, receiver, warehouse = harness.run_scenario(scenario, workdir)
        violations, facts = harness.check(out, receiver, warehouse, poison=poison)
    finally:
        if cleanup is not None:
            cleanup.cleanup()

    answered = [r for r in out.runs if "seconds" in r]
    http = facts["http"]
    statuses = facts["statuses"]
    print(
        f"fault soak: {args.runs} scheduled runs ({kills} SIGKILLed, {failing} made to fail), {args.records:,} records, "
        f"{args.batch_size} users / request, fault rate {args.fault_rate:.0%}, churn {args.churn:.0%} / run, "
        f"{len(poison)} poison users, seed {args.seed}"
    )
    print(f"violations: {len(violations)}")
    for v in violations:
        print(f"  {v}")
    print(
        f"runs recorded: {facts['runs']} {dict(sorted(statuses.items()))}; kills that hit a running run: "
        f"{facts['kills_in_run']}, that found no running run (before the run wrote its row, or after it answered): "
        f"{facts['kills_between_runs']}, that never fired (the run ended first): {facts['kills_not_fired']}; "
        f"sync processes started: {facts['process_starts']}"
    )
    print(
        f"receiver: {facts['batch_requests']:,} batch requests, faults {dict(sorted(facts['faults'].items()))}; "
        f"{facts['commits']:,} batches applied ({facts['records_committed']:,} records); "
        f"{facts['replayed_requests']:,} answered as replays of an applied message_id (nothing applied)"
    )
    print(
        f"sync: {facts['rows_replayed']:,} records re-sent from the outbox under their old key (sync_runs.rows_replayed); "
        f"{facts.get('justified_resends', 0):,} records re-sent with the same content under a new key because another "
        f"version had been sent or written to the outbox in between; refusals logged: {len(facts['refusals'])} "
        f"(all poison: {all(k in poison for k, _, _ in facts['refusals'])})"
    )
    print(
        f"http (runs that answered; killed runs' counters die with them): {http.get('requests', 0):,} requests, "
        f"{http.get('retries', 0):,} retries ({http.get('throttled', 0)} after 429, {http.get('server_errors', 0)} after 5xx, "
        f"{http.get('timeouts', 0)} after a timeout, {http.get('connection_errors', 0)} after a dropped connection), "
        f"{http.get('retry_wait_seconds', 0):.2f} s waited"
    )
    run_seconds = [r["seconds"] for r in answered]
    print(
        f"time: {facts['seconds']:.1f} s wall in all; answered runs: median {statistics.median(run_seconds):.2f} s, "
        f"max {max(run_seconds):.2f} s; final audience {facts['audience']:,}, receiver members {facts['receiver_members']:,}"
    )
    if args.json:
        facts.pop("audience_keys", None)
        print(json.dumps({"violations": violations, **facts}, default=str))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
