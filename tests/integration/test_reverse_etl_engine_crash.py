"""Crash safety, end to end: a sync run in a subprocess is SIGKILLed at random points, run after run.

The destination appends every batch it accepts (idempotency key, operation, records) to a JSON-lines
file before answering, the way a partner commits before its answer can be lost. Between runs the
audience churns (joins, leaves, changes, consent flips, suppressions). Kills come at random calls,
either before the batch is logged (it never arrived) or right after (it arrived, the answer was lost),
or at a random moment chosen by the parent (inside a commit, between batches...). After final runs
without kills, the log — replayed the way a receiver that de-duplicates on the key would — must
hold exactly the audience, and no record may have been delivered twice in a row with the same
content under two different keys.

The seed is random per test run and printed on failure; set COHORTFLOW_CRASH_SEED to replay one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 6

CHILD = textwrap.dedent(
    """
    import json, os, random, signal, sys
    import duckdb
    import reverse_etl.engine as engine
    from reverse_etl import BatchRejectedError, BatchResult, RecordDestination, SyncSpec, run_sync

    warehouse, log_path, seed, kill_at, kill_after_log, transient_p = sys.argv[1:7]
    kill_at, kill_after_log, transient_p = int(kill_at), kill_after_log == "1", float(transient_p)
    rng = random.Random(int(seed))
    # Small groups so that one run crosses several outbox writes and marks.
    engine.OUTBOX_EVERY_RECORDS, engine.MARK_EVERY_RECORDS, engine.MARK_EVERY_SECONDS = 15, 7, 0.005

    class LogApi(RecordDestination):
        kind = "log"
        any_identifier_of = frozenset({"email"})

        def __init__(self):
            self.calls = 0
            # What each key delivered: a de-duplicating partner answers a repeated key as it did the
            # first time (the records it applied then are acknowledged, the others refused again).
            self.applied_by_key = {}
            if os.path.exists(log_path):
                with open(log_path, encoding="utf-8") as handle:
                    for line in handle:
                        entry = json.loads(line)
                        self.applied_by_key.setdefault(entry["key"], {k for k, _, _ in entry["records"]})
            self.out = open(log_path, "a", encoding="utf-8")

        @property
        def location(self):
            return "file://" + log_path

        def begin(self, run):
            print("begin", flush=True)

        def send_batch(self, run, batch):
            self.calls += 1
            if self.calls == kill_at and not kill_after_log:
                os.kill(os.getpid(), signal.SIGKILL)  # the request never left
            rows = batch.to_pylist()
            if any("invalid" in r["email"] for r in rows):
                if self.calls == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)  # refused, and the refusal is lost
                raise BatchRejectedError("HTTP 400: malformed email in payload", reason="malformed email", status=400)
            permanent = {k: "hard bounce" for k, r in zip(batch.keys, rows) if "bounce" in r["email"]}
            skipped = {k: "no usable identifier" for k, r in zip(batch.keys, rows) if "noid" in r["email"]}
            first = self.applied_by_key.get(batch.idempotency_key)
            busy = {k: "profile locked, retry later" for k in batch.keys
                    if k not in permanent and k not in skipped
                    and (k not in first if first is not None else rng.random() < transient_p)}
            applied = [[k, r["email"], r["score"]] for k, r in zip(batch.keys, rows)
                       if k not in permanent and k not in skipped and k not in busy]
            line = json.dumps({"key": batch.idempotency_key, "op": batch.operation.value, "records": applied})
            self.out.write(line + "\\n")
            self.out.flush()  # the partner committed
            self.applied_by_key.setdefault(batch.idempotency_key, {k for k, _, _ in applied})
            if self.calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # ... and its answer is lost
            return BatchResult(rejected=busy, permanent=permanent, skipped=skipped)

    spec = SyncSpec(name="crash_sync", source_relation="c.audience", primary_key=["user_id"],
                    fields={"user_id": "user_id", "score": "score"}, identifiers={"email": "email"},
                    consent_relation="c.consent", consent_column="ok", suppress_relations=["c.suppressed"],
                    mode="mirror", batch_size=5)
    con = duckdb.connect(warehouse)
    result = run_sync(con, spec, LogApi())
    print("done", result.status, result.rows_processed, flush=True)
    """
)


class World:
    """The audience and its churn, decided by the seed. Users never change their e-mail kind."""

    def __init__(self, warehouse: Path, rng: random.Random) -> None:
        self.warehouse = warehouse
        self.rng = rng
        self.next_id = 0
        self.never_consented: set[str] = set()
        con = duckdb.connect(str(warehouse))
        con.execute("create schema c")
        con.execute("create table c.audience (user_id varchar, email varchar, score integer)")
        con.execute("create table c.consent (user_id varchar, ok boolean)")
        con.execute("create table c.suppressed (user_id varchar)")
        self.join(con, 40, round_no=0)
        con.close()

    def join(self, con: duckdb.DuckDBPyConnection, n: int, round_no: int) -> None:
        for _ in range(n):
            uid = f"u{self.next_id:04d}"
            self.next_id += 1
            kind = self.rng.choices(["ok", "invalid", "bounce", "noid"], weights=[85, 5, 5, 5])[0]
            email = f"{uid}@example.com" if kind == "ok" else f"{uid}.{kind}@example.com"
            con.execute("insert into c.audience values (?, ?, ?)", [uid, email, round_no * 1000 + self.next_id])
            consent = self.rng.random() < 0.9
            if not consent:
                self.never_consented.add(uid)
            con.execute("insert into c.consent values (?, ?)", [uid, consent])

    def churn(self, round_no: int) -> None:
        con = duckdb.connect(str(self.warehouse))
        users = [u for (u,) in con.execute("select user_id from c.audience order by 1").fetchall()]
        for uid in self.rng.sample(users, 4):
            con.execute("delete from c.audience where user_id = ?", [uid])
        users = [u for (u,) in con.execute("select user_id from c.audience order by 1").fetchall()]
        for i, uid in enumerate(self.rng.sample(users, 8)):  # scores never come back to an old value
            con.execute("update c.audience set score = ? where user_id = ?", [round_no * 1000 + 500 + i, uid])
        flippable = [u for u in users if u not in self.never_consented]
        for uid in self.rng.sample(flippable, 3):
            con.execute("update c.consent set ok = not ok where user_id = ?", [uid])
        con.execute("insert into c.suppressed values (?)", [self.rng.choice(users)])
        self.join(con, 6, round_no)
        con.close()


def run_child(warehouse: Path, log: Path, rng: random.Random, *, kill: str, transient_p: float) -> str:
    """Run the sync in a subprocess; ``kill`` is ``none``, ``before``, ``after`` (at a random call) or ``timer``."""
    kill_at = rng.randint(1, 5) if kill in ("before", "after") else 0  # a run makes 5-15 calls
    args = [sys.executable, "-c", CHILD, str(warehouse), str(log), str(rng.randrange(1 << 30)), str(kill_at),
            "1" if kill == "after" else "0", str(transient_p)]
    child = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill == "timer":
        assert child.stdout is not None
        line = child.stdout.readline()  # "begin": planned, about to send
        if line.startswith("begin"):
            time.sleep(rng.uniform(0, 0.06))
            child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=60)
    if child.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"sync subprocess failed ({child.returncode}):\n{out}\n{err}")
    return "killed" if child.returncode == -signal.SIGKILL else "done"


def test_killed_runs_never_lose_duplicate_or_leak_a_record(tmp_path: Path) -> None:
    seed = int(os.environ.get("COHORTFLOW_CRASH_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    warehouse, log = tmp_path / "warehouse.duckdb", tmp_path / "partner.jsonl"
    world = World(warehouse, rng)
    outcomes = []
    for round_no in range(1, ROUNDS + 1):
        # The first run (40 adds, 8+ calls) always dies; later ones at random.
        kill = "after" if round_no == 1 else rng.choice(["before", "after", "after", "timer", "none"])
        outcomes.append((kill, run_child(warehouse, log, rng, kill=kill, transient_p=0.1)))
        world.churn(round_no)
    # Final runs without kills or new transient refusals: the first settles what killed runs left (a
    # replayed key is answered as it was first, "busy" records included), the second re-sends those,
    # the third must find nothing to do.
    final = [run_child(warehouse, log, rng, kill="none", transient_p=0.0) for _ in range(3)]
    context = f"seed {seed}, runs {outcomes} + {final}"
    assert any(result == "killed" for _, result in outcomes), context

    con = duckdb.connect(str(warehouse))
    try:
        expected = {
            u: (email, score)
            for u, email, score in con.execute(
                "select a.user_id, a.email, a.score from c.audience a join c.consent c using (user_id) "
                "where c.ok and a.user_id not in (select user_id from c.suppressed) "
                "and a.email not similar to '.*(invalid|bounce|noid).*'"
            ).fetchall()
        }
        # The partner's view: apply the log, once per idempotency key.
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        held: dict[str, tuple[str, int]] = {}
        applied_keys: set[str] = set()
        history: dict[str, list[tuple[str, str, str, int]]] = {}
        for entry in entries:
            for record_key, email, score in entry["records"]:
                history.setdefault(record_key, []).append((entry["key"], entry["op"], email, score))
            if entry["key"] in applied_keys:
                continue
            applied_keys.add(entry["key"])
            for record_key, email, score in entry["records"]:
                if entry["op"] == "remove":
                    held.pop(record_key, None)
                else:
                    held[record_key] = (email, score)
        assert held == expected, context

        # Nothing acknowledged was sent again except under its own key: a record's consecutive
        # deliveries of the same operation and data share the key — unless the engine sent the
        # later one because an operation in between (written to the outbox, then the run died)
        # may or may not have arrived, which it records as delivery 'in_doubt' (on the 'sent' row,
        # or on the 'superseded' row of a send whose run died and that a later operation settled).
        deliveries_of = {
            (batch_key, record_key): delivery
            for batch_key, record_key, delivery in con.execute(
                "select batch_key, record_key, delivery from cohortflow_syncs.sync_records "
                "where status in ('sent', 'superseded')"
            ).fetchall()
        }
        for record_key, deliveries in history.items():
            for index, (earlier, later) in enumerate(zip(deliveries, deliveries[1:])):
                # A replay of a key the record was already delivered under is dropped by the partner.
                replay_of_earlier_key = later[0] in {key for key, *_ in deliveries[:index + 1]}
                if earlier[1:] == later[1:] and earlier[0] != later[0] and not replay_of_earlier_key:
                    assert deliveries_of.get((later[0], record_key)) == "in_doubt", (
                        f"{record_key} delivered twice under two keys: {deliveries}; {context}"
                    )
        # No user without consent was ever sent anything.
        assert not world.never_consented & set(history), context
        assert not any("invalid" in email or "bounce" in email or "noid" in email
                       for deliveries in history.values() for _, _, email, _ in deliveries), context

        state = dict(con.execute("select record_key, record ->> '$.score' from cohortflow_syncs.sync_state").fetchall())
        assert {k: int(v) for k, v in state.items()} == {k: score for k, (_, score) in expected.items()}, context
        # Outbox rows stay only for records whose earlier delivery is uncertain and that the partner
        # now refuses for good (held): if they leave the audience, a remove is still owed.
        assert con.execute(
            "select count(*) from cohortflow_syncs.sync_outbox o where o.record_key not in "
            "(select record_key from cohortflow_syncs.sync_refused)"
        ).fetchone() == (0,), context
        # ...and a held record is not sent again: the last runs sent nothing.
        assert con.execute(
            "select list(rows_processed order by started_at desc)[1] from cohortflow_syncs.sync_runs"
        ).fetchone() == (0,), context
        assert con.execute(
            "select count(*) from cohortflow_syncs.sync_records where status <> 'sent' and coalesce(reason, '') = ''"
        ).fetchone() == (0,), context
        refused = con.execute("select record_key, status, reason from cohortflow_syncs.sync_refused").fetchall()
        assert all(reason for _, _, reason in refused), context
        statuses = {s for (s,) in con.execute("select distinct status from cohortflow_syncs.sync_runs").fetchall()}
        assert statuses <= {"succeeded", "abandoned"} and "running" not in statuses, context
    finally:
        con.close()


@pytest.mark.parametrize("kill", ["after"])
def test_a_batch_killed_after_arriving_is_logged_once_per_key(tmp_path: Path, kill: str) -> None:
    """The smallest crash: the partner commits batch 2, the process dies, the next run re-sends it under its key."""
    rng = random.Random(7)
    warehouse, log = tmp_path / "warehouse.duckdb", tmp_path / "partner.jsonl"
    World(warehouse, rng)
    args = [sys.executable, "-c", CHILD, str(warehouse), str(log), "1", "2", "1", "0"]
    died = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert died.returncode == -signal.SIGKILL, died.stderr
    lost = [json.loads(line)["key"] for line in log.read_text().splitlines()][-1]
    done = subprocess.run(args[:6] + ["0", "0", "0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "done succeeded" in done.stdout, done.stderr
    keys = [json.loads(line)["key"] for line in log.read_text().splitlines()]
    killed, rerun = keys[:2], keys[2:]
    # The next run starts by re-sending, under the same keys and in the same order, what the killed
    # run had not marked: batch 2 (lost answer) and, if its mark had not been committed yet, batch 1.
    replayed = rerun[: rerun.index(lost) + 1]
    assert replayed in ([lost], killed), keys
    assert len(set(rerun[len(replayed):])) == len(rerun) - len(replayed) and not set(killed) & set(rerun[len(replayed):])
    con = duckdb.connect(str(warehouse))
    try:
        assert con.execute("select list(status order by started_at) from cohortflow_syncs.sync_runs").fetchone() == (
            ["abandoned", "succeeded"],
        )
    finally:
        con.close()
