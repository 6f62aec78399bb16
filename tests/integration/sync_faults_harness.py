"""Fault harness for reverse-ETL delivery: a real webhook receiver, a real DuckDB file, a killed subprocess.

Used by ``tests/integration/test_sync_faults.py`` (small, for CI) and ``bench/bench_sync_faults.py``
(the long soak). Nothing is mocked:

* the warehouse is a DuckDB file holding ``cohorts.audience`` (``user_id`` primary key, ``plan``,
  ``ltv``, ``visits``), churned between runs (adds, changes, removes, re-adds with old values);
* the receiver is :class:`~reverse_etl.emulators.webhook.WebhookEmulator` on 127.0.0.1 in the calling
  process, with seeded random faults (5xx, 429 + ``Retry-After``, connections dropped before and after
  committing, answers held past the client's timeout after committing) and optional poison users
  (a whole-batch 400); it also SIGKILLs the sync process at a chosen request (see :class:`Receiver`);
* the sync runs in a child process (this file run as a script, ``child`` argument) that builds the
  webhook destination from ``destinations.yml``-style settings and runs ``run_sync`` once per
  command read on stdin, opening the warehouse only for the run.

:func:`check` then turns what happened into a list of violations (empty = the engine kept its promise).
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO_ROOT = HERE.parents[2]
SYNC = "audience_to_webhook"
SECRET = "sync-faults-secret-5d1c2e"
SECRET_ENV = "SYNC_FAULTS_WEBHOOK_SECRET"
SETTINGS_ENV = "SYNC_FAULTS_DESTINATION"
PLANS = ("free", "pro", "team", None)
# Where a kill lands. before_commit / after_commit: while the child waits for the answer of its N-th
# batch request (the receiver has not / has applied it). after_answer: a few ms after that answer left,
# while the child marks or sends on. timed: a seeded delay after the run command (planning, outbox
# writes, marks, sending, anything).
PHASES = ("before_commit", "after_commit", "after_answer", "timed")
STATE = "cohortflow_syncs"
# Fault kinds every scenario meets at least once (scripted in its second run, random after that).
FAULTS_SEEN = frozenset({"server_error", "throttle", "drop_before", "drop_after", "timeout"})


# --- the warehouse -----------------------------------------------------------------------------------


def user_id(number: int) -> str:
    return f"u{number:06d}"


def create_audience(path: Path, users: int, seed: int) -> None:
    """A fresh warehouse file with ``users`` audience rows (values drawn from ``seed``)."""
    import duckdb

    rng = random.Random(seed)
    rows = [(user_id(i), rng.choice(PLANS), rng.uniform(0, 5000), rng.randint(0, 400)) for i in range(users)]
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema cohorts")
        con.execute(
            "create table cohorts.audience (user_id varchar primary key, plan varchar, ltv double, visits integer)"
        )
        _insert(con, rows)
    finally:
        con.close()


def _insert(con: Any, rows: list[tuple[str, str | None, float, int]]) -> None:
    if not rows:
        return
    import pyarrow as pa

    table = pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.string()),
        "plan": pa.array([r[1] for r in rows], pa.string()),
        "ltv": pa.array([r[2] for r in rows], pa.float64()),
        "visits": pa.array([r[3] for r in rows], pa.int32()),
    })
    con.register("_new_rows", table)
    try:
        con.execute("insert into cohorts.audience select user_id, plan, ltv, visits from _new_rows")
    finally:
        con.unregister("_new_rows")


def read_audience(con: Any) -> dict[str, dict[str, Any]]:
    """``user_id -> {plan, ltv, visits}`` as the warehouse holds it."""
    return {
        uid: {"plan": plan, "ltv": ltv, "visits": visits}
        for uid, plan, ltv, visits in con.execute("select user_id, plan, ltv, visits from cohorts.audience").fetchall()
    }


@dataclass
class Churn:
    """Seeded audience churn between runs: removes, value changes, new users and re-adds of old ones."""

    seed: int
    next_number: int
    frozen: frozenset[str] = frozenset()  # users never churned (poison users keep their data)
    rng: random.Random = field(init=False)
    gone: dict[str, tuple[str | None, float, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def apply(self, con: Any, share: float) -> dict[str, int]:
        """Touch about ``share`` of the audience: 1/4 leave, 1/2 change, 1/4 join (half of them re-adds)."""
        rng = self.rng
        ids = sorted(u for (u,) in con.execute("select user_id from cohorts.audience").fetchall() if u not in self.frozen)
        touched = max(4, int(len(ids) * share))
        leave = rng.sample(ids, min(len(ids), touched // 4))
        rest = sorted(set(ids) - set(leave))
        change = rng.sample(rest, min(len(rest), touched // 2))
        for uid, plan, ltv, visits in con.execute(
            "select user_id, plan, ltv, visits from cohorts.audience where list_contains(?, user_id)", [leave]
        ).fetchall():
            self.gone[uid] = (plan, ltv, visits)
        con.execute("delete from cohorts.audience where list_contains(?, user_id)", [leave])
        for uid in change:
            how = rng.randrange(3)
            if how == 0:
                con.execute("update cohorts.audience set ltv = ltv + ? where user_id = ?", [rng.uniform(0.5, 99.5), uid])
            elif how == 1:
                con.execute("update cohorts.audience set visits = visits + 1 where user_id = ?", [uid])
            else:
                con.execute("update cohorts.audience set plan = ?, visits = visits + 2 where user_id = ?", [rng.choice(PLANS), uid])
        joins = touched // 4
        comeback = rng.sample(sorted(set(self.gone) - set(leave)), min(joins // 2, len(set(self.gone) - set(leave))))
        rows = [(uid, *self.gone.pop(uid)) for uid in comeback]  # back with exactly the values they left with
        for _ in range(joins - len(comeback)):
            rows.append((user_id(self.next_number), rng.choice(PLANS), rng.uniform(0, 5000), rng.randint(0, 400)))
            self.next_number += 1
        _insert(con, rows)
        return {"left": len(leave), "changed": len(change), "joined": len(rows) - len(comeback), "came_back": len(comeback)}


# --- the receiver ------------------------------------------------------------------------------------


def _receiver_class() -> type:
    from reverse_etl.emulators.base import Reply
    from reverse_etl.emulators.webhook import WebhookEmulator

    class Receiver(WebhookEmulator):
        """The webhook emulator, noting which requests committed, and able to SIGKILL the sync process.

        :meth:`arm` makes the N-th request of the next run that reaches the receiver's commit step
        (faulted requests and de-duplicated replays do not) kill ``pid`` in the given phase.
        """

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.committing: set[int] = set()  # id() of the requests that committed a batch
            self._kill: tuple[int, str, int, float] | None = None
            self._handled = 0
            self._timer: threading.Timer | None = None
            self.kills_fired: list[str] = []

        def _serve(self, handler: Any) -> None:
            # The emulator writes an answer's headers and body in two sends; with Nagle's algorithm on,
            # the body then waits for the client's delayed ACK: ~40 ms per request on a kept-alive
            # connection. TCP_NODELAY removes that wait and changes nothing else.
            try:
                handler.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            super()._serve(handler)

        def arm(self, *, pid: int, index: int, phase: str, delay: float = 0.0) -> None:
            with self.lock:
                self._kill = (pid, phase, index, delay)
                self._handled = 0

        def disarm(self) -> None:
            with self.lock:
                self._kill = None

        def settle(self) -> None:
            """Wait for a pending after-answer kill to fire."""
            timer = self._timer
            if timer is not None:
                timer.join()
                self._timer = None

        def _fire(self, pid: int, phase: str) -> None:
            self.kills_fired.append(phase)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        def handle(self, request: Any) -> Any:
            kill = None
            if self._kill is not None:
                self._handled += 1
                if self._handled == self._kill[2]:
                    kill, self._kill = self._kill, None
            if kill is not None and kill[1] == "before_commit":
                self._fire(kill[0], kill[1])
                return Reply(503, {"error": "the sync process was killed before this batch was applied"})
            reply = super().handle(request)
            if 200 <= reply.status < 300:
                self.committing.add(id(request))
            if kill is not None:
                if kill[1] == "after_commit":
                    self._fire(kill[0], kill[1])
                else:
                    self._timer = threading.Timer(kill[3], self._fire, (kill[0], kill[1]))
                    self._timer.start()
            return reply

    return Receiver


def make_receiver(*, seed: int, fault_rate: float, batch_size: int, poison: Iterable[str] = (),
                  read_timeout: float = 0.3) -> Any:
    """A receiver with ``fault_rate`` of its batch requests faulted (shares below), seeded."""
    from reverse_etl.emulators.base import Faults

    r = fault_rate
    faults = Faults(
        seed=seed, server_error=0.25 * r, throttle=0.2 * r, drop_before=0.2 * r, drop_after=0.2 * r, timeout=0.15 * r,
        retry_after=0.02, timeout_delay=2 * read_timeout,
    )
    return _receiver_class()(secret=SECRET, max_users=batch_size, faults=faults, poison_user_ids=poison)


def destination_settings(url: str, *, batch_size: int, read_timeout: float = 0.3, max_attempts: int = 4) -> dict[str, Any]:
    """The ``destinations.yml`` entry of the sync (the secret comes from the environment in the child)."""
    return {
        "type": "webhook", "url": url + "/cohorts", "max_batch_size": batch_size,
        "timeout": read_timeout, "connect_timeout": 1.0, "max_attempts": max_attempts,
        "retry_base_delay": 0.01, "retry_max_delay": 0.05, "max_retry_wait": 5.0,
    }


# --- the sync process ---------------------------------------------------------------------------------


class SyncProcess:
    """The child that runs the sync, one run per command; restarted after it is killed."""

    def __init__(self, warehouse: Path, settings: dict[str, Any], log_path: Path, *, run_timeout: float = 120.0) -> None:
        self.warehouse = warehouse
        self.settings = settings
        self.log_path = log_path
        self.run_timeout = run_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.spare: subprocess.Popen[str] | None = None
        self.keep_spare = True
        self.starts = 0
        self.timed_kill_fired = False
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()

    def _spawn(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env[SECRET_ENV] = SECRET
        env[SETTINGS_ENV] = json.dumps(self.settings)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.starts += 1
        return subprocess.Popen(
            [sys.executable, str(HERE), "child", str(self.warehouse)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1, env=env,
            cwd=str(REPO_ROOT),
        )

    def ensure_started(self) -> int:
        """The running child's pid. A spare child is kept imported and idle (it touches nothing until
        it gets a command), so a restart after a kill costs no import time."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.proc.wait()
            self.proc, self.spare = self.spare or self._spawn(), None
            # Wait until the child has imported everything: a timed kill then lands in a run.
            ready = _readline(self.proc, self.run_timeout)
            if ready.strip() != "ready":
                raise RuntimeError(f"the sync process did not start: {ready!r}\n{self.log_tail()}")
        if self.spare is None and self.keep_spare:
            self.spare = self._spawn()
        return self.proc.pid

    def run(self, *, kill_after: float | None = None) -> dict[str, Any] | None:
        """One run: its result, or ``None`` when the process died by SIGKILL before answering."""
        self.ensure_started()
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write('{"cmd": "run"}\n')
        proc.stdin.flush()
        timer = None
        self.timed_kill_fired = False
        if kill_after is not None:
            def fire() -> None:
                self.timed_kill_fired = True
                _kill_quietly(proc.pid)

            timer = threading.Timer(kill_after, fire)
            timer.start()
        try:
            line = _readline(proc, self.run_timeout)
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()
        if line:
            return json.loads(line)
        code = proc.wait(timeout=30)
        if code != -signal.SIGKILL:
            raise RuntimeError(f"the sync process exited with {code}, not by SIGKILL; see {self.log_path}:\n{self.log_tail()}")
        self.proc = None
        return None

    def reap(self) -> None:
        """Wait for a process that was killed after it answered."""
        proc, self.proc = self.proc, None
        if proc is not None:
            code = proc.wait(timeout=30)
            if code != -signal.SIGKILL:
                raise RuntimeError(f"the sync process exited with {code}, not by SIGKILL:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def stop(self) -> None:
        for proc in (self.spare, self.proc):
            if proc is None:
                continue
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.proc = self.spare = None
        self._log.close()


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the sync process answered nothing in {timeout:g} s (hung run?)")
    return proc.stdout.readline()


def child_main(warehouse: str) -> int:
    """The sync process: build the destination from settings, run the sync once per stdin line."""
    import duckdb

    from reverse_etl import SyncError, SyncSpec, run_sync
    from reverse_etl.destinations import destination_class

    settings = json.loads(os.environ[SETTINGS_ENV])
    settings["secret"] = os.environ[SECRET_ENV]
    destination = destination_class(settings["type"]).from_settings(settings, sync_name=SYNC)
    spec = SyncSpec(
        name=SYNC, source_relation="cohorts.audience", primary_key=["user_id"], mode="mirror",
        identifiers={"user_id": "user_id"},
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        before = destination.stats.as_dict()
        started = time.perf_counter()
        con = duckdb.connect(warehouse)
        try:
            result = run_sync(con, spec, destination)
            out: dict[str, Any] = {"status": result.status, **result.as_metadata()}
        except SyncError as exc:
            failed = exc.result
            out = {"status": failed.status if failed else "error", "run_id": failed.run_id if failed else None,
                   "error": str(exc)}
            if failed is not None:
                out.update({k: v for k, v in failed.as_metadata().items() if k != "status"})
        finally:
            con.close()
        after = destination.stats.as_dict()
        out["seconds"] = time.perf_counter() - started
        out["http"] = {k: after[k] - before[k] for k in after}
        sys.stdout.write(json.dumps(out, default=str) + "\n")
        sys.stdout.flush()
    return 0


# --- a scenario: kills, faults, churn, then runs until one succeeds --------------------------------------


@dataclass
class Scenario:
    """What to run. ``runs`` scheduled runs (the first one loads the audience, each later one comes after
    a churn of ``churn_share`` of it): ``kills`` of them are SIGKILLed, ``failing_runs`` are made to fail
    (a batch applied but its answer lost, then 5xx until the retries run out), the rest run clean. Then
    one more churn and runs without kills until one succeeds, and a last run with nothing to do."""

    seed: int = 7
    users: int = 200
    batch_size: int = 10
    fault_rate: float = 0.10
    runs: int = 6
    kills: int = 5
    failing_runs: int = 1
    shuffle: bool = False  # spread kills and failures over the runs (else: kills first)
    churn_share: float = 0.2
    poison: tuple[str, ...] = ()
    max_finishing_runs: int = 10
    read_timeout: float = 0.3
    max_attempts: int = 4
    phases: tuple[str, ...] = PHASES
    timed_kill_max: float = 0.5
    run_timeout: float = 120.0
    verbose: bool = False

    def schedule(self, rng: random.Random) -> list[str]:
        kills = min(self.kills, self.runs)
        fails = min(self.failing_runs, self.runs - kills)
        plan = ["kill"] * kills + ["fail"] * fails + ["clean"] * (self.runs - kills - fails)
        if self.shuffle:
            rest = plan[1:]
            rng.shuffle(rest)
            plan = plan[:1] + rest
        return plan


@dataclass
class Outcome:
    """What a scenario did, for :func:`check` and for reports."""

    runs: list[dict[str, Any]] = field(default_factory=list)  # one per run command: the child's answer or {"killed": ...}
    expected_status: dict[str, str] = field(default_factory=dict)  # run_id -> the status its row must end with
    kills_in_run: int = 0  # kills that found a run in progress ('running' row)
    kills_between_runs: int = 0
    kills_not_fired: int = 0  # the run finished before its kill point came
    last_run_requests: int = -1
    noop_run: dict[str, Any] | None = None
    process_starts: int = 0
    seconds: float = 0.0
    fault_log: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    replays: int = 0
    churn: Counter[str] = field(default_factory=Counter)
    # (request position, record key, version) of every outbox row seen after a run: what the sync had
    # planned to send and may have sent as far as it knew (see delivery_violations).
    planned: list[tuple[int, str, tuple[str, str]]] = field(default_factory=list)


def run_scenario(s: Scenario, workdir: Path) -> tuple[Outcome, Any, Path]:
    """Run ``s`` in ``workdir``; returns the outcome, the (stopped) receiver and the warehouse path."""
    import duckdb

    started = time.perf_counter()
    rng = random.Random(s.seed * 7919 + 1)
    warehouse = workdir / "warehouse.duckdb"
    create_audience(warehouse, s.users, s.seed)
    churn = Churn(seed=s.seed + 1, next_number=s.users, frozen=frozenset(s.poison))
    receiver = make_receiver(seed=s.seed, fault_rate=s.fault_rate, batch_size=s.batch_size, poison=s.poison,
                             read_timeout=s.read_timeout)
    out = Outcome()
    receiver.start()
    child = SyncProcess(
        warehouse,
        destination_settings(receiver.url, batch_size=s.batch_size, read_timeout=s.read_timeout, max_attempts=s.max_attempts),
        workdir / "sync-process.log", run_timeout=s.run_timeout,
    )

    def note(msg: str) -> None:
        if s.verbose:
            print(f"{time.perf_counter() - started:6.2f} {msg}", flush=True)

    def do_churn() -> int:
        con = duckdb.connect(str(warehouse))
        try:
            counts = churn.apply(con, s.churn_share)
        finally:
            con.close()
        out.churn.update(counts)
        # Lower bound of new batches this run sends: removes, changes and adds go in separate batches.
        per_op = (counts["left"], counts["changed"], counts["joined"] + counts["came_back"])
        return sum((n + s.batch_size - 1) // s.batch_size for n in per_op if n)

    def read_outbox(con: Any) -> None:
        position = len(receiver.requests)
        for record_key, operation, record in con.execute(
            f"select record_key, operation, record from {STATE}.sync_outbox where sync_name = ?", [SYNC]
        ).fetchall():
            props = {k: v for k, v in json.loads(record).items() if k != "user_id"} if record else {}
            out.planned.append((position, record_key, _version(operation != "remove", props)))

    def after_run() -> None:
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            read_outbox(con)
        finally:
            con.close()

    def after_kill(label: str) -> None:
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            rows = con.execute(f"select run_id, status from {STATE}.sync_runs").fetchall()
            read_outbox(con)
        finally:
            con.close()
        fresh = [(run_id, status) for run_id, status in rows if run_id not in out.expected_status]
        landed = False
        for run_id, status in fresh:
            # A run found 'running' died: the next run must record it as abandoned. One that had
            # finished before the kill landed keeps its status.
            out.expected_status[run_id] = "abandoned" if status == "running" else status
            landed = landed or status == "running"
        if landed:
            out.kills_in_run += 1
        else:
            out.kills_between_runs += 1
        out.runs.append({"killed": label, "run_ids": [r for r, _ in fresh]})
        note(f"  killed ({label}); runs found: {fresh}")

    def one_run(*, kill: tuple[str, int, float] | None = None) -> dict[str, Any] | None:
        pid = child.ensure_started()
        note(f"  process {pid} ready")
        kill_after = None
        label = ""
        if kill is not None:
            phase, index, delay = kill
            label = f"{phase} at request {index}" if phase != "timed" else f"timed {delay * 1000:.0f} ms"
            if phase == "timed":
                kill_after = delay
            else:
                receiver.arm(pid=pid, index=index, phase=phase, delay=delay)
        fired_before = len(receiver.kills_fired)
        answer = child.run(kill_after=kill_after)
        receiver.disarm()
        receiver.settle()
        if answer is None:
            after_kill(label)
            return None
        out.runs.append(answer)
        out.expected_status[answer["run_id"]] = answer["status"]
        if answer["status"] != "succeeded":
            after_run()
        note(f"  run {answer['run_id']} {answer['status']}: +{answer.get('rows_added')} ~{answer.get('rows_changed')} "
             f"-{answer.get('rows_removed')} replayed {answer.get('rows_replayed')} rejected {answer.get('rows_rejected')} "
             f"http {answer['http']} {answer.get('error') or ''}")
        if len(receiver.kills_fired) > fired_before or child.timed_kill_fired:
            # The kill landed only once the run had answered: the process died idle.
            child.reap()
            after_kill(label + ", after the run answered")
        elif kill is not None:
            out.kills_not_fired += 1
        return answer

    try:
        kill_number = 0
        for number, kind in enumerate(s.schedule(rng)):
            batches = (s.users + s.batch_size - 1) // s.batch_size if number == 0 else do_churn()
            if number == 1:
                # Every fault kind at least once, whatever the random draws.
                receiver.inject("ok", "server_error", "ok", "throttle", "drop_before", "ok", "drop_after", "timeout")
            if kind == "kill":
                phase = s.phases[kill_number % len(s.phases)]
                kill_number += 1
                last = max(1, batches - 1) if phase == "after_answer" else max(1, batches)
                index = rng.randint(1, last)
                delay = rng.uniform(0.05, s.timed_kill_max) if phase == "timed" else rng.uniform(0.0, 0.01)
                note(f"run {len(out.runs) + 1}: kill {phase} index {index}")
                one_run(kill=(phase, index, delay))
            elif kind == "fail":
                # A batch is applied but its answer is lost; its retries get 5xx until they run out.
                receiver.inject("ok", "ok", "drop_after", *["server_error"] * (s.max_attempts - 1))
                note(f"run {len(out.runs) + 1}: made to fail")
                one_run()
            else:
                note(f"run {len(out.runs) + 1}: clean")
                one_run()
        child.keep_spare = False
        do_churn()
        for _ in range(s.max_finishing_runs):
            note(f"run {len(out.runs) + 1}: finishing")
            answer = one_run()
            if answer is not None and answer["status"] == "succeeded":
                break
        # Nothing changed since the last success: this run must send nothing at all.
        before = len(receiver.requests)
        out.noop_run = one_run()
        out.last_run_requests = len(receiver.requests) - before
    finally:
        child.stop()
        receiver.stop()
    out.process_starts = child.starts
    out.seconds = time.perf_counter() - started
    out.fault_log = Counter(receiver.fault_log)
    out.requests = len(receiver.batch_requests())
    out.replays = sum(1 for d in receiver.deliveries if d.replayed)
    return out, receiver, warehouse


# --- the checks --------------------------------------------------------------------------------------------


def _version(in_cohort: bool, props: dict[str, Any]) -> tuple[str, str]:
    return ("in", json.dumps(props, sort_keys=True)) if in_cohort else ("out", "")


def delivery_violations(receiver: Any, planned: list[tuple[int, str, tuple[str, str]]] = ()) -> tuple[list[str], dict[str, int]]:
    """(b): nothing acknowledged was applied twice except under the same ``message_id``.

    Walks every batch request the receiver got, in arrival order (the sync sends one at a time, and a
    commit happens before the request's answer, so arrival order is commit order). Per record, a
    commit of the same version (in + the same properties, or out) as the record's previous commit but
    under another ``message_id`` is a duplicate delivery — unless, in between, the sync sent or
    planned a *different* version of the record: a request carrying it whose answer was lost, or an
    outbox row left by a killed / failed run (``planned``), which may have gone out before the kill.
    As far as the sync could know, that version may have been applied, so sending the earlier one
    again is required, not a duplicate. (One version, another, then the first again is plain churn.)
    """
    violations: list[str] = []
    stats: Counter[str] = Counter()
    last: dict[str, tuple[tuple[str, str], str]] = {}
    doubt: set[str] = set()
    committed_ids: Counter[str] = Counter()
    events = sorted(planned, key=lambda e: e[0])
    next_event = 0
    for position, request in enumerate(list(receiver.requests)):
        while next_event < len(events) and events[next_event][0] <= position:
            _, uid, version = events[next_event]
            next_event += 1
            if uid not in last or last[uid][0] != version:
                doubt.add(uid)
        if not receiver.is_batch(request):
            continue
        try:
            payload = request.json()
        except ValueError:
            # A body cut short by a kill mid-upload: refused as not JSON, never applied.
            if id(request) in receiver.committing:
                violations.append("a request whose body is not JSON was applied")
            stats["truncated_requests"] += 1
            continue
        message_id = payload.get("message_id")
        committed = id(request) in receiver.committing
        if committed:
            committed_ids[message_id] += 1
            stats["commits"] += 1
        for user in payload.get("users", []):
            uid = user["user_id"]
            version = _version(payload["in_cohort"], user.get("user_properties", {}))
            previous = last.get(uid)
            if committed:
                stats["records_committed"] += 1
                if previous is not None and previous[0] == version and previous[1] != message_id:
                    if uid in doubt:
                        stats["justified_resends"] += 1
                    else:
                        violations.append(
                            f"record {uid} {version[0]} applied twice under different keys: {previous[1]} then {message_id}"
                        )
                last[uid] = (version, message_id)
                doubt.discard(uid)
            elif previous is None or previous[0] != version:
                doubt.add(uid)
    for message_id, n in committed_ids.items():
        if n > 1:
            violations.append(f"message_id {message_id} committed {n} times (the receiver's de-duplication failed)")
    return violations, dict(stats)


def membership_violations(held: dict[str, dict[str, Any]], intended: dict[str, dict[str, Any]]) -> list[str]:
    """(a): the receiver's members equal the intended audience, user by user, property by property."""
    violations = []
    missing = sorted(set(intended) - set(held))
    extra = sorted(set(held) - set(intended))
    wrong = sorted(u for u in set(intended) & set(held) if held[u] != intended[u])
    for label, keys in (("missing at the receiver (lost)", missing), ("at the receiver but not in the audience (leaked)", extra),
                        ("held with other values than the warehouse's", wrong)):
        if keys:
            sample = [(u, held.get(u), intended.get(u)) for u in keys[:3]]
            violations.append(f"(a) {len(keys)} record(s) {label}, e.g. {sample}")
    return violations


def check(out: Outcome, receiver: Any, warehouse: Path, *, poison: Iterable[str] = ()) -> tuple[list[str], dict[str, Any]]:
    """Every promise of the engine, checked against the receiver and the warehouse. Returns (violations, facts)."""
    import duckdb

    poison = set(poison)
    violations: list[str] = []
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        wanted = read_audience(con)
        state = {k: json.loads(v) for k, v in con.execute(
            f"select record_key, record from {STATE}.sync_state where sync_name = ?", [SYNC]).fetchall()}
        runs = dict(con.execute(f"select run_id, status from {STATE}.sync_runs where sync_name = ?", [SYNC]).fetchall())
        last_run = con.execute(
            f"select run_id, status from {STATE}.sync_runs where sync_name = ? order by started_at desc, run_id desc limit 1",
            [SYNC]).fetchone()
        unexplained = con.execute(
            f"select record_key, status, run_id from {STATE}.sync_records where sync_name = ? and status <> 'sent' "
            "and (reason is null or trim(reason) = '')", [SYNC]).fetchall()
        # Refusals only: 'superseded' rows log unmarked sends a later acknowledgement settled.
        refusals = con.execute(
            f"select record_key, status, reason from {STATE}.sync_records where sync_name = ? "
            "and status in ('rejected', 'skipped')",
            [SYNC]).fetchall()
        refused_now = con.execute(
            f"select record_key, status, reason from {STATE}.sync_refused where sync_name = ?", [SYNC]).fetchall()
        outbox = con.execute(f"select count(*) from {STATE}.sync_outbox where sync_name = ?", [SYNC]).fetchone()[0]
        failed_without_error = con.execute(
            f"select run_id from {STATE}.sync_runs where sync_name = ? and status in ('failed', 'abandoned') "
            "and (error is null or trim(error) = '')", [SYNC]).fetchall()
        replayed_rows = con.execute(
            f"select coalesce(sum(rows_replayed), 0) from {STATE}.sync_runs where sync_name = ?", [SYNC]).fetchone()[0]
    finally:
        con.close()

    # (a) + (c): the receiver holds exactly the intended audience, row by row; nothing is lost.
    intended = {u: v for u, v in wanted.items() if u not in poison}
    held = receiver.members(SYNC)
    violations += membership_violations(held, intended)
    # The sync's own memory agrees: what it last acknowledged is the audience (so the next run is right too).
    state_rows = {u: {k: v for k, v in r.items() if k != "user_id"} for u, r in state.items()}
    if state_rows != intended:
        bad = sorted(set(state_rows) ^ set(intended)) + sorted(u for u in set(state_rows) & set(intended) if state_rows[u] != intended[u])
        violations.append(f"(c) sync_state differs from the audience for {len(bad)} record(s), e.g. {bad[:3]}")
    if outbox:
        violations.append(f"(c) {outbox} outbox row(s) left after the last successful run")
    if out.noop_run is None or out.noop_run.get("status") != "succeeded" or out.noop_run.get("rows_processed") != 0:
        violations.append(f"(c) a run with nothing changed should send nothing, got {out.noop_run}")
    if out.last_run_requests != 0:
        violations.append(f"(c) the run with nothing changed made {out.last_run_requests} request(s)")

    # (b): nothing applied twice except under the same idempotency key.
    dup, delivery_stats = delivery_violations(receiver, out.planned)
    violations += [f"(b) {v}" for v in dup[:20]]
    if len(dup) > 20:
        violations.append(f"(b) ... and {len(dup) - 20} more duplicate deliveries")
    # (b) also: a key names one request. The receiver refuses a key that comes again with another body
    # (the HTTP Idempotency-Key draft, Stripe): a replay must carry exactly the bytes first sent.
    if receiver.key_conflicts:
        violations.append(
            f"(b) {len(receiver.key_conflicts)} request(s) reused an idempotency key with a different body, "
            f"e.g. {receiver.key_conflicts[:3]}"
        )

    # (d): every rejection / skip has its reason.
    if unexplained:
        violations.append(f"(d) {len(unexplained)} rejected / skipped record row(s) without a reason, e.g. {unexplained[:3]}")
    not_poison = sorted({k for k, _, _ in refusals} - poison)
    if not_poison:
        violations.append(f"(d) records refused that the receiver never refuses: {not_poison[:5]}")

    # (e): killed runs are abandoned, failed ones failed, only answered successes succeeded, the last one succeeded.
    if last_run is None or last_run[1] != "succeeded":
        violations.append(f"(e) the last run is {last_run}, not succeeded")
    for run_id, status in runs.items():
        expected = out.expected_status.get(run_id)
        if expected is None:
            violations.append(f"(e) run {run_id} ({status}) was never seen by the harness")
        elif status != expected:
            violations.append(f"(e) run {run_id} is {status!r}, expected {expected!r}")
    for run_id in set(out.expected_status) - set(runs):
        violations.append(f"(e) run {run_id} answered by the sync process has no sync_runs row")
    if failed_without_error:
        violations.append(f"(e) failed / abandoned runs without an error: {failed_without_error[:3]}")
    answered_failed = [r for r in out.runs if r.get("status") == "failed"]
    for r in answered_failed:
        if not r.get("error"):
            violations.append(f"(e) run {r.get('run_id')} failed without saying why")

    facts: dict[str, Any] = {
        "audience": len(wanted), "audience_keys": sorted(wanted), "receiver_members": len(held), "runs": len(runs),
        "statuses": dict(Counter(runs.values())), "kills_in_run": out.kills_in_run,
        "kills_between_runs": out.kills_between_runs, "kills_not_fired": out.kills_not_fired, "batch_requests": out.requests,
        "replayed_requests": out.replays, "rows_replayed": int(replayed_rows),
        "faults": dict(out.fault_log), "process_starts": out.process_starts, "seconds": round(out.seconds, 2),
        "churn": dict(out.churn), "refusals": refusals, "refused_now": refused_now, **delivery_stats,
        "http": dict(sum((Counter(r["http"]) for r in out.runs if "http" in r), Counter())),
    }
    return violations, facts


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        sys.exit(child_main(sys.argv[2]))
    sys.exit(f"usage: {sys.argv[0]} child <warehouse.duckdb>")
