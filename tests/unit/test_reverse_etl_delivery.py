"""Delivery to a record destination: idempotency keys, the outbox, splits, refusals and in-doubt records.

A small in-process API (:class:`Api`) stands in for a partner: it de-duplicates on the idempotency key
like a real receiver, refuses a key reused with another body ("same key, same request", as the HTTP
Idempotency-Key draft and Stripe do), and can refuse whole batches, answer per-record outcomes, or fail a call before
or after applying it (the "timeout after the partner committed" case). The warehouse is a real DuckDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from reverse_etl import (
    BatchRejectedError,
    BatchResult,
    ChangeBatch,
    CsvFileDestination,
    DestinationError,
    InMemoryDestination,
    Operation,
    RunInfo,
    SyncError,
    SyncSpec,
    TransientDestinationError,
    plan_sync,
    run_sync,
)
from reverse_etl.plan import batch_key, split_key

T0 = datetime(2026, 3, 1, 12, 0, 0)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("create schema c")
    connection.execute(
        "create table c.users as select 'u' || lpad(i::varchar, 3, '0') as user_id, "
        "'user' || i || '@example.com' as email, i as score from range(30) t(i)"
    )
    yield connection
    connection.close()


def spec(**overrides: object) -> SyncSpec:
    values: dict[str, object] = {"name": "users_api", "source_relation": "c.users", "primary_key": ["user_id"], "batch_size": 10}
    values.update(overrides)
    return SyncSpec(**values)  # type: ignore[arg-type]


class Api(InMemoryDestination):
    """A partner API with knobs.

    invalid_emails
        A batch holding a record with one of these e-mails is refused whole (HTTP ``status``).
    transient, permanent, skip
        Record key -> reason, answered per record (those records are not applied).
    fail_at, apply_then_fail
        The ``fail_at``-th call (1-based, counted over the API's life) raises TransientDestinationError,
        before applying the batch, or after it when ``apply_then_fail`` (the acknowledgement is lost).
    """

    def __init__(self, *, max_batch_size: int | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size)
        self.invalid_emails: set[str] = set()
        self.status = 400
        self.transient: dict[str, str] = {}
        self.permanent: dict[str, str] = {}
        self.skip: dict[str, str] = {}
        self.fail_at: int | None = None
        self.apply_then_fail = False
        self.calls = 0
        self.seen: list[tuple[str, str, str, str]] = []  # (idempotency key, operation, record key, email)
        self.bodies: dict[str, tuple[object, ...]] = {}  # idempotency key -> the first request under it
        self.conflicts: list[str] = []  # keys that came again with another request

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        self.calls += 1
        self.received.append((batch.idempotency_key, batch.operation, batch.keys))  # every call, refused or not
        body = (batch.operation, batch.keys, batch.created_at, tuple(tuple(sorted(r.items())) for r in batch.to_pylist()))
        if self.bodies.setdefault(batch.idempotency_key, body) != body:
            self.conflicts.append(batch.idempotency_key)
            raise BatchRejectedError("HTTP 422: idempotency key reused with a different body", reason="key reused", status=422)
        failing = self.calls == self.fail_at
        if failing and not self.apply_then_fail:
            raise TransientDestinationError("503 Service Unavailable after 3 attempts")
        rows = batch.to_pylist()
        if any(r.get("email") in self.invalid_emails for r in rows):
            raise BatchRejectedError("HTTP 400: invalid email in batch", reason="invalid email", status=self.status)
        answer = BatchResult(
            rejected={k: v for k, v in self.transient.items() if k in batch.keys},
            permanent={k: v for k, v in self.permanent.items() if k in batch.keys},
            skipped={k: v for k, v in self.skip.items() if k in batch.keys},
        )
        refused = {*answer.rejected, *answer.permanent, *answer.skipped}
        if batch.idempotency_key not in self.applied_keys:  # de-duplicate on the key
            self.applied_keys.add(batch.idempotency_key)
            for key, row in zip(batch.keys, rows, strict=True):
                if key in refused:
                    continue
                self.seen.append((batch.idempotency_key, batch.operation.value, key, row.get("email")))
                if batch.operation is Operation.REMOVE:
                    self.records.pop(key, None)
                else:
                    self.records[key] = row
        if failing:
            raise TransientDestinationError("read timeout after 10 s (the partner may have committed)")
        return answer


def audience(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, object]]:
    rows = con.execute("select user_id, email, score from c.users order by 1").fetchall()
    return {u: {"user_id": u, "email": e, "score": s} for u, e, s in rows}


def outbox(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    return con.execute(
        "select batch_key, operation, record_key from cohortflow_syncs.sync_outbox order by batch_order, record_key"
    ).fetchall()


def sync(con: duckdb.DuckDBPyConnection, api: InMemoryDestination, tmp_path: Path, n: int = 0, **kwargs: object):  # type: ignore[no-untyped-def]
    s = kwargs.pop("sync_spec", None) or spec()
    return run_sync(con, s, api, lock_dir=tmp_path, now=T0 + timedelta(hours=n), **kwargs)  # type: ignore[arg-type]


def test_every_batch_is_in_the_outbox_under_its_key_when_it_is_sent(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    observer = con.cursor()  # a second connection: sees only what was committed

    class Watching(Api):
        def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
            rows = observer.execute(
                "select operation, list(record_key order by record_key) from cohortflow_syncs.sync_outbox "
                "where batch_key = ? group by 1", [batch.idempotency_key]
            ).fetchall()
            assert rows == [(batch.operation.value, sorted(batch.keys))]
            return super().send_batch(run, batch)

    api = Watching()
    result = sync(con, api, tmp_path)
    keys = [key for key, _, _ in api.received]
    assert keys == [batch_key("users_api", result.run_id, seq) for seq in (1, 2, 3)]
    assert len(set(keys)) == 3 and all(len(k) == 32 and int(k, 16) >= 0 for k in keys)
    assert outbox(con) == []  # every mark deleted its batch's rows
    assert con.execute("select count(distinct batch_key) from cohortflow_syncs.sync_records").fetchone() == (3,)


def test_a_batch_whose_acknowledgement_was_lost_is_resent_first_under_the_same_key(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    api = Api()
    api.fail_at, api.apply_then_fail = 2, True
    with pytest.raises(TransientDestinationError) as info:
        sync(con, api, tmp_path, 0)
    lost_key = api.received[1][0]
    message = str(info.value)
    assert "sync 'users_api'" in message and "read timeout" in message and lost_key in message
    assert info.value.result is not None and info.value.result.status == "failed"
    assert con.execute("select status, error like '%' || ? || '%' from cohortflow_syncs.sync_runs", [lost_key]).fetchall() == [
        ("failed", True)
    ]
    # Batch 1 is marked; batches 2 (applied, unacknowledged) and 3 (never sent) wait in the outbox.
    assert con.execute("select count(*) from cohortflow_syncs.sync_state").fetchone() == (10,)
    assert sorted({key for key, _, _ in outbox(con)}) == sorted({api.received[1][0], batch_key("users_api", info.value.result.run_id, 3)})

    second = sync(con, api, tmp_path, 1)
    assert second.status == "succeeded" and second.rows_replayed == 20 and second.rows_added == 20
    assert api.received[2][0] == lost_key  # re-sent first, under the same key...
    assert [k for k, _, _, _ in api.seen].count(lost_key) == 10  # ...so the partner applied it once
    assert api.records == audience(con) and api.conflicts == []
    assert outbox(con) == []
    assert con.execute(
        "select distinct delivery, replayed from cohortflow_syncs.sync_records where batch_key = ?", [lost_key]
    ).fetchall() == [("new", True)]
    third = sync(con, api, tmp_path, 2)
    assert (third.rows_processed, third.rows_replayed) == (0, 0)


def test_the_key_a_destination_retries_with_is_the_outboxed_one(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    class RetryingApi(Api):
        """Retries a dropped connection itself, like an HTTP client with backoff."""

        def __init__(self) -> None:
            super().__init__()
            self.attempt_keys: list[str] = []
            self.outboxed: list[str] = []

        def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
            self.outboxed.extend(k for (k,) in observer.execute(
                "select distinct batch_key from cohortflow_syncs.sync_outbox where record_key = ?", [batch.keys[0]]).fetchall())
            for attempt in range(3):
                self.attempt_keys.append(batch.idempotency_key)
                if attempt < 2:
                    continue  # connection reset: try again with the same request
                return super().send_batch(run, batch)
            raise AssertionError("unreachable")

    observer = con.cursor()
    api = RetryingApi()
    sync(con, api, tmp_path)
    assert api.attempt_keys == [k for k in api.outboxed for _ in range(3)]
    assert len(set(api.outboxed)) == 3


def test_a_lost_batch_is_replayed_as_sent_and_what_changed_since_follows_under_a_new_key(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    api = Api()
    api.fail_at, api.apply_then_fail = 2, True
    with pytest.raises(TransientDestinationError):
        sync(con, api, tmp_path, 0)
    lost_key, first_send = api.received[1][0], api.bodies[api.received[1][0]]
    con.execute("update c.users set score = 1000 where user_id = 'u012'")  # changed...
    con.execute("delete from c.users where user_id = 'u015'")  # ...and left, since the batch was sent
    second = sync(con, api, tmp_path, 1)
    replay = api.received[2]
    # The replay is the very request first sent under the key: all ten records, old values included.
    assert replay[0] == lost_key and len(replay[2]) == 10 and api.conflicts == []
    assert api.bodies[lost_key] == first_send
    later = [(key, op, keys) for key, op, keys in api.received[3:] if {"u012", "u015"} & set(keys)]
    assert [(op, keys) for _, op, keys in later] == [(Operation.REMOVE, ("u015",)), (Operation.CHANGE, ("u012",))]
    assert all(key != lost_key for key, _, _ in later)
    assert api.records["u012"]["score"] == 1000 and api.records == audience(con)
    assert second.rows_replayed == 20
    assert con.execute(
        "select operation, delivery, replayed from cohortflow_syncs.sync_records where run_id = ? and record_key = 'u012' "
        "order by recorded_at, replayed desc", [second.run_id]
    ).fetchall() == [("add", "new", True), ("change", "new", False)]


def test_an_add_that_may_have_arrived_is_removed_when_the_record_leaves(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    api = Api()
    api.fail_at, api.apply_then_fail = 1, True  # batch 1 (u000..u009) reaches the partner, the answer does not
    with pytest.raises(TransientDestinationError):
        sync(con, api, tmp_path, 0)
    assert "u003" in api.records
    con.execute("delete from c.users where user_id = 'u003'")
    second = sync(con, api, tmp_path, 1)
    assert second.rows_removed == 1
    removes = [(keys, key) for key, op, keys in api.received if op is Operation.REMOVE]
    assert [keys for keys, _ in removes] == [("u003",)]
    assert "u003" not in api.records and api.records == audience(con)
    # The remove carried the values that may have arrived (a partner deleting by e-mail needs them).
    assert ("remove", "u003", "user3@example.com") in [(op, k, e) for _, op, k, e in api.seen]
    assert outbox(con) == []


def test_a_change_reverted_after_a_lost_batch_is_sent_back(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    api = Api()
    sync(con, api, tmp_path, 0)
    con.execute("update c.users set score = -1 where user_id = 'u003'")
    api.fail_at, api.apply_then_fail = api.calls + 1, True
    with pytest.raises(TransientDestinationError):
        sync(con, api, tmp_path, 1)
    assert api.records["u003"]["score"] == -1  # arrived, not acknowledged
    lost_key = api.received[-1][0]
    con.execute("update c.users set score = 3 where user_id = 'u003'")  # back to what was acknowledged
    with plan_sync(con, spec(), destination=InMemoryDestination()) as plan:  # a plan alone sees the record in doubt
        assert (plan.changes, plan.in_doubt) == (1, 1)
    third = sync(con, api, tmp_path, 2)
    assert api.records["u003"]["score"] == 3 and api.records == audience(con) and api.conflicts == []
    # The lost change goes again as it was (score -1, its key), then the change back under a new key.
    assert [(key == lost_key, op, keys) for key, op, keys in api.received[-2:]] == [
        (True, Operation.CHANGE, ("u003",)), (False, Operation.CHANGE, ("u003",))
    ]
    assert con.execute(
        "select operation, delivery, replayed from cohortflow_syncs.sync_records where run_id = ? order by replayed desc",
        [third.run_id],
    ).fetchall() == [("change", "new", True), ("change", "new", False)]


def test_a_remove_that_may_have_arrived_is_undone_when_the_record_returns(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    api = Api()
    sync(con, api, tmp_path, 0)
    con.execute("create table c.saved as select * from c.users where user_id = 'u003'")
    con.execute("delete from c.users where user_id = 'u003'")
    api.fail_at, api.apply_then_fail = api.calls + 1, True
    with pytest.raises(TransientDestinationError):
        sync(con, api, tmp_path, 1)
    assert "u003" not in api.records
    con.execute("insert into c.users select * from c.saved")  # back, unchanged: the plain diff sees nothing
    third = sync(con, api, tmp_path, 2)
    assert third.rows_added == 1 and api.records == audience(con)


def test_a_whole_batch_refusal_is_split_until_the_bad_record_is_alone(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    con.execute("insert into c.users select 'u' || lpad(i::varchar, 3, '0'), 'user' || i || '@example.com', i from range(30, 100) t(i)")
    con.execute("update c.users set email = 'not-an-email' where user_id = 'u042'")
    api = Api()
    api.invalid_emails = {"not-an-email"}
    result = sync(con, api, tmp_path)

    assert result.status == "succeeded"
    assert (result.rows_added, result.rows_rejected, result.rows_rejected_permanently, result.rows_processed) == (99, 1, 1, 100)
    assert result.rejected_sample == (("u042", "invalid email"),)
    expected = audience(con)
    del expected["u042"]
    assert api.records == expected
    # 10 batches; batch 5 refused whole -> 5 + 5, the bad half -> 2 + 3, its bad part -> 1 + 2.
    assert api.calls == 16
    parent = batch_key("users_api", result.run_id, 5)
    half = tuple(f"u04{i}" for i in range(5))
    assert (split_key(parent, half), Operation.ADD, half) in api.received
    assert len({k for _, _, k, _ in api.seen}) == len(api.seen) == 99  # nobody delivered twice
    assert con.execute(
        "select operation, status, reason from cohortflow_syncs.sync_records where record_key = 'u042'"
    ).fetchall() == [("add", "rejected", "invalid email")]
    assert outbox(con) == []

    again = sync(con, api, tmp_path, 1)  # same data: not sent again
    assert (again.rows_processed, again.rows_held) == (0, 1) and api.calls == 16
    con.execute("update c.users set email = 'fixed@example.com' where user_id = 'u042'")
    fixed = sync(con, api, tmp_path, 2)
    assert (fixed.rows_added, fixed.rows_held) == (1, 0)
    assert api.records == audience(con)


def test_an_auth_failure_is_not_split(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    con.execute("update c.users set email = 'x' where user_id = 'u012'")
    api = Api()
    api.invalid_emails, api.status = {"x"}, 401
    with pytest.raises(DestinationError, match=r"sync 'users_api'.*status 401 .*not split"):
        sync(con, api, tmp_path)
    assert api.calls == 2  # batch 1 delivered, batch 2 refused once, no split
    assert con.execute("select count(*) from cohortflow_syncs.sync_refused").fetchone() == (0,)
    assert con.execute("select count(*) from cohortflow_syncs.sync_state").fetchone() == (10,)


def test_a_crash_between_split_parts_replays_each_part_under_its_own_key(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    con.execute("update c.users set email = 'bad' where user_id = 'u017'")
    api = Api()
    api.invalid_emails = {"bad"}
    # Calls: batch 1, batch 2 (refused), first half u010..u014 (applied, answer lost).
    api.fail_at, api.apply_then_fail = 3, True
    with pytest.raises(TransientDestinationError):
        sync(con, api, tmp_path, 0)
    half_key = api.received[2][0]
    assert api.received[2][2] == tuple(f"u01{i}" for i in range(5))
    assert {k for k, _, r in outbox(con) if r == "u010"} == {half_key}  # relabelled before it was sent

    api.fail_at = None
    sync(con, api, tmp_path, 1)
    assert api.received[3][0] == half_key  # the same part under the same key: the partner drops it
    delivered = [(op, k, e) for _, op, k, e in api.seen]
    assert len(delivered) == len(set(delivered))
    expected = audience(con)
    del expected["u017"]
    assert api.records == expected


def test_a_batch_larger_than_todays_cap_is_not_replayed_but_sent_anew_in_doubt(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    api = Api()
    api.fail_at = 1  # batch 1 fails before arriving; all three batches of 10 stay in the outbox
    with pytest.raises(TransientDestinationError):
        sync(con, api, tmp_path, 0)
    old_keys = {key for key, _, _ in outbox(con)}
    capped = Api(max_batch_size=4)  # the same destination, now taking 4 records a request
    capped.bodies, capped.applied_keys = api.bodies, api.applied_keys
    result = sync(con, capped, tmp_path, 1)
    # The same bytes cannot go in requests of four: new keys, each record once, recorded as in doubt.
    assert result.rows_replayed == 0 and result.rows_added == 30 and capped.conflicts == []
    assert max(len(keys) for _, _, keys in capped.received) <= 4
    assert not old_keys & {key for key, _, _ in capped.received}
    assert capped.records == audience(con)
    assert con.execute(
        "select distinct delivery from cohortflow_syncs.sync_records where run_id = ?", [result.run_id]
    ).fetchall() == [("in_doubt",)]
    assert outbox(con) == []


def test_per_record_outcomes_transient_permanent_and_skipped(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    api = Api()
    api.transient = {"u001": "rate limited for this profile"}
    api.permanent = {"u002": "invalid phone number"}
    api.skip = {"u003": "no usable identifier after normalising"}
    first = sync(con, api, tmp_path, 0)
    assert (first.rows_added, first.rows_rejected, first.rows_rejected_permanently, first.rows_skipped_by_destination) == (27, 2, 1, 1)
    assert first.rows_processed == 30
    assert con.execute(
        "select record_key, status, reason from cohortflow_syncs.sync_records where status <> 'sent' order by 1"
    ).fetchall() == [
        ("u001", "rejected", "rate limited for this profile"),
        ("u002", "rejected", "invalid phone number"),
        ("u003", "skipped", "no usable identifier after normalising"),
    ]
    assert con.execute("select record_key, status from cohortflow_syncs.sync_refused order by 1").fetchall() == [
        ("u002", "rejected"), ("u003", "skipped")
    ]

    before = len(api.received)
    second = sync(con, api, tmp_path, 1)  # only the transient one is tried again
    assert [keys for _, _, keys in api.received[before:]] == [("u001",)]
    assert (second.rows_held, second.rows_rejected) == (2, 1)

    api.transient, api.permanent, api.skip = {}, {}, {}
    con.execute("update c.users set score = 200 where user_id = 'u002'")  # its data changed: sent again
    third = sync(con, api, tmp_path, 2)
    assert (third.rows_added, third.rows_held) == (2, 1)
    assert "u003" not in api.records
    resync = sync(con, api, tmp_path, 3, full_resync=True)  # a full resync sends held records too
    assert resync.rows_added == 30 and api.records == audience(con)
    assert con.execute("select count(*) from cohortflow_syncs.sync_refused").fetchone() == (0,)


def test_a_permanently_refused_change_keeps_what_the_destination_holds(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    api = Api()
    sync(con, api, tmp_path, 0)
    state_before = con.execute("select record_hash, record from cohortflow_syncs.sync_state where record_key = 'u002'").fetchone()
    con.execute("update c.users set email = 'broken' where user_id = 'u002'")
    api.permanent = {"u002": "invalid email"}
    refused = sync(con, api, tmp_path, 1)
    assert refused.rows_rejected_permanently == 1
    # sync_state is what the destination holds: still the version acknowledged before.
    assert con.execute("select record_hash, record from cohortflow_syncs.sync_state where record_key = 'u002'").fetchone() == state_before
    held = sync(con, api, tmp_path, 2)
    assert (held.rows_processed, held.rows_held) == (0, 1)
    api.permanent = {}
    con.execute("delete from c.users where user_id = 'u002'")
    gone = sync(con, api, tmp_path, 3)
    assert gone.rows_removed == 1
    assert ("remove", "u002", "user2@example.com") in [(op, k, e) for _, op, k, e in api.seen]  # the held e-mail
    assert "u002" not in api.records


def test_a_destination_answering_for_unknown_records_fails_the_run(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    api = Api()
    api.skip = {"u001": ""}  # a skip without a reason still gets one
    sync(con, api, tmp_path, 0)
    assert con.execute("select reason from cohortflow_syncs.sync_records where record_key = 'u001'").fetchone() == (
        "(the destination gave no reason)",
    )

    class Confused(Api):
        def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
            super().send_batch(run, batch)
            return BatchResult(rejected={"u999": "?"})

    con.execute("update c.users set score = score + 1")
    with pytest.raises(SyncError, match=r"sync 'users_api': memory destination answered rejected for key\(s\) not in batch 1: \['u999'\]"):
        sync(con, Confused(), tmp_path, 1)


def test_dry_run_reports_the_replay_and_leaves_the_outbox(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    api = Api()
    api.fail_at = 2
    with pytest.raises(TransientDestinationError):
        sync(con, api, tmp_path, 0)
    rows = outbox(con)
    dry = sync(con, api, tmp_path, 1, dry_run=True)
    assert dry.status == "dry_run" and dry.rows_replayed == 20 and dry.rows_added == 20
    assert outbox(con) == rows and api.calls == 2


def test_another_destination_starts_from_nothing_and_leaves_the_first_ones_outbox(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    api = Api()
    api.fail_at = 1
    with pytest.raises(TransientDestinationError):
        sync(con, api, tmp_path, 0)
    pending = outbox(con)
    assert pending
    # The state is what one destination holds for the sync: a file is another destination.
    result = sync(con, CsvFileDestination(tmp_path / "users.csv"), tmp_path, 1)
    assert result.rows_added == 30 and result.rows_replayed == 0
    assert outbox(con) == pending  # still the API's, replayed when the sync ships there again
    back = sync(con, api, tmp_path, 2)
    assert back.rows_replayed == 30 and api.records == audience(con) and outbox(con) == []
