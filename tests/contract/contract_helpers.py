"""Shared pieces of the destination contract tests: runs, batches, fast retry settings, clocks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from reverse_etl.destinations.base import ChangeBatch, RunInfo
from reverse_etl.http import HttpConfig, SenderOptions
from reverse_etl.spec import Operation, SyncMode

SYNC = "vip_buyers"
STARTED = datetime(2026, 3, 1, 12, 0, 0)


class FakeClock:
    """A monotonic clock that only moves when something sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class RecordingSleep:
    """Really sleeps (for servers whose rate windows run on real time) and records each request."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)


def fast_config(**overrides: Any) -> HttpConfig:
    """Tiny backoffs, a 1 s read timeout, no pacing: retries cost milliseconds."""
    values: dict[str, Any] = dict(
        connect_timeout=1.0, read_timeout=1.0, max_attempts=4, base_delay=0.01, max_delay=0.05,
        max_total_wait=5.0, max_requests_per_second=0,
    )
    values.update(overrides)
    return HttpConfig(**values)


def fake_options(clock: FakeClock, *, random: float = 0.5) -> SenderOptions:
    """Sender hooks on a fake clock (no real waiting at all)."""
    return SenderOptions(sleep=clock.sleep, random=lambda: random, clock=clock)


def make_run(sync: str = SYNC, *, run_id: str = "20260301T120000Z-0000abcd", fields: Sequence[str] = ()) -> RunInfo:
    return RunInfo(
        sync_name=sync, run_id=run_id, mode=SyncMode.MIRROR, full_resync=False, started_at=STARTED,
        fields=tuple(fields), primary_key_fields=("user_id",),
    )


def make_batch(
    operation: Operation | str,
    rows: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str] | None = None,
    key: str = "vip_buyers-idem-0001",
    sequence: int = 1,
    schema: pa.Schema | None = None,
) -> ChangeBatch:
    """A batch of plain rows (keys default to each row's user_id)."""
    table = pa.Table.from_pylist(list(rows), schema=schema)
    record_keys = tuple(keys) if keys is not None else tuple(str(r["user_id"]) for r in rows)
    return ChangeBatch(operation=Operation(operation), sequence=sequence, keys=record_keys, records=table, idempotency_key=key)


def users(n: int, *, start: int = 0, domain: str = "example.com") -> list[dict[str, Any]]:
    """``n`` plain user rows u0000.. with an e-mail and a value."""
    return [
        {"user_id": f"u{i:04d}", "email": f"user{i}@{domain}", "ltv": float(i) + 0.5}
        for i in range(start, start + n)
    ]
