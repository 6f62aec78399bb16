"""The one shape every format is turned into, and the code that writes it to the raw tables.

Each format reader produces a *stage*: one row per source record with the target columns,
a ``target`` table (events / users / items) and, for bad rows, a ``reason`` + ``detail``.
:func:`write_stage` then writes rejections, de-duplicated events, users and items, so that
the rules for dedupe and rejection live in one place whatever the format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from cohortflow.ingest.reasons import DEFAULT_MAX_FIELD_BYTES
from cohortflow.ingest.sql import lit, ts_lit
from cohortflow.ingest.untracked import UntrackedCounts, count_untracked
from cohortflow.warehouse import RAW_SCHEMA

#: Stage column -> SQL type. Readers select any subset; the rest are NULL.
STAGE_COLUMNS: dict[str, str] = {
    "source_row": "bigint",
    "payload": "varchar",
    "target": "varchar",
    "reason": "varchar",
    "detail": "varchar",
    "insert_id": "varchar",
    "user_id": "varchar",
    "device_id": "varchar",
    "event_type": "varchar",
    "event_time": "timestamp",
    "session_id": "bigint",
    "event_properties": "json",
    "user_properties": "json",
    "item_id": "varchar",
    "item_name": "varchar",
    "category": "varchar",
    "price": "double",
    "is_in_stock": "boolean",
    "item_properties": "json",
    "updated_at": "timestamp",
}


@dataclass(frozen=True)
class FileContext:
    """What every write needs to know about the file being ingested."""

    fmt: str
    entity: str
    source_file: str
    sha256: str
    now: datetime
    prefix: str
    #: A value (CSV cell, JSON line, event of a JSON document) above this many bytes is rejected.
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES
    #: Temp table of the tracking plan's (event_type, property) pairs; ``None``: no plan, count nothing.
    plan_table: str | None = None


@dataclass
class Counts:
    """Row counts of one file (accumulated over its blocks)."""

    rows_read: int = 0
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    users_loaded: int = 0
    items_loaded: int = 0
    untracked: UntrackedCounts = field(default_factory=UntrackedCounts)

    @property
    def rows_rejected(self) -> int:
        """Rejected rows, all reasons."""
        return sum(self.rejected_by_reason.values())

    def add(self, other: Counts) -> None:
        """Add another block's counts to these."""
        self.rows_read += other.rows_read
        self.rows_loaded += other.rows_loaded
        self.rows_duplicate += other.rows_duplicate
        self.rejected_by_reason.update(other.rejected_by_reason)
        self.users_loaded += other.users_loaded
        self.items_loaded += other.items_loaded
        self.untracked.add(other.untracked)


def create_stage(con: duckdb.DuckDBPyConnection, name: str, select_sql: str, provided: Iterable[str]) -> None:
    """Materialise ``select_sql`` (which yields the ``provided`` columns) as stage table ``name``."""
    have = set(provided)
    unknown = have - STAGE_COLUMNS.keys()
    if unknown:  # a programming error in a reader, not bad input
        raise ValueError(f"unknown stage columns: {sorted(unknown)}")
    cols = ", ".join(f"cast({c if c in have else 'null'} as {t}) as {c}" for c, t in STAGE_COLUMNS.items())
    con.execute(f"create or replace temp table {name} as select {cols} from ({select_sql}) s")


def write_stage(con: duckdb.DuckDBPyConnection, stage: str, ctx: FileContext) -> Counts:
    """Write a stage to the raw tables and count what happened.

    - rows with a ``reason`` go to ``raw.rejected_events`` with their payload;
    - event rows get ``event_id`` = insert_id, else ``<sha256[:16]>:<source_row>``; an event whose
      id is already in ``raw.events`` or repeats earlier in the stage is a duplicate (first wins,
      by source row), found with an anti-join rather than a key index (10M-row tables);
    - user and item rows are appended as they are (later updates win downstream by ``updated_at``).
    """
    counts = Counts()
    now, fmt, src = ts_lit(ctx.now), lit(ctx.fmt), lit(ctx.source_file)
    counts.rows_read = con.execute(f"select count(*) from {stage}").fetchone()[0]
    for reason, n in con.execute(f"select reason, count(*) from {stage} where reason is not null group by 1").fetchall():
        counts.rejected_by_reason[reason] = n
    if counts.rejected_by_reason:
        con.execute(f"""
            insert into {RAW_SCHEMA}.rejected_events
            select {fmt}, {src}, source_row, coalesce(target, {lit(ctx.entity)}), reason,
                   coalesce(detail, reason), coalesce(payload, ''), {now}
            from {stage} where reason is not null order by source_row""")

    by_target = dict(con.execute(
        f"select target, count(*) from {stage} where reason is null group by 1").fetchall())
    n_candidates = by_target.get("events", 0)
    if n_candidates:
        event_id = f"coalesce(insert_id, {lit(ctx.sha256[:16] + ':')} || source_row)"
        # Ids repeated inside the stage (retried uploads in one file) are few: find them with one
        # aggregate, then keep only their first row; a window over every row would cost far more.
        repeats = f"{ctx.prefix}_repeats"
        con.execute(f"""
            create or replace temp table {repeats} as
            select {event_id} as event_id, min(source_row) as first_row, count(*) as n from {stage}
            where reason is null and target = 'events' group by 1 having count(*) > 1""")
        inserted = con.execute(f"""
            insert into {RAW_SCHEMA}.events
            select c.event_id, insert_id, user_id, device_id, event_type, event_time, session_id,
                   coalesce(event_properties, '{{}}'), coalesce(user_properties, '{{}}'),
                   {fmt}, {src}, source_row, {now}
            from (select *, {event_id} as event_id from {stage} where reason is null and target = 'events') c
            left join {repeats} r on r.event_id = c.event_id
            where (r.first_row is null or c.source_row = r.first_row)
              and not exists (select 1 from {RAW_SCHEMA}.events e where e.event_id = c.event_id)""").fetchone()[0]
        if ctx.plan_table is not None and inserted:
            # The rows just inserted: the stage's first occurrences, less (only when some event_id was
            # already in raw.events) those that were not inserted by this block.
            loaded = f"""
                select c.source_row, c.event_type, c.event_time, c.event_properties
                from (select *, {event_id} as event_id from {stage} where reason is null and target = 'events') c
                left join {repeats} r on r.event_id = c.event_id
                where (r.first_row is null or c.source_row = r.first_row)"""
            repeated_here = con.execute(f"select coalesce(sum(n - 1), 0) from {repeats}").fetchone()[0]
            if inserted < n_candidates - repeated_here:
                loaded += f"""
                  and exists (select 1 from {RAW_SCHEMA}.events e where e.event_id = c.event_id
                              and e.source_file = {src} and e.ingested_at = {now} and e.source_row = c.source_row)"""
            counts.untracked = count_untracked(con, loaded, ctx.plan_table)
        con.execute(f"drop table {repeats}")
        counts.rows_loaded += inserted
        counts.rows_duplicate += n_candidates - inserted

    users = 0 if not by_target.get("users") else con.execute(f"""
        insert into {RAW_SCHEMA}.users
        select user_id, coalesce(user_properties, '{{}}'), coalesce(updated_at, {now}), {fmt}, {src}, source_row, {now}
        from {stage} where reason is null and target = 'users' order by source_row""").fetchone()[0]
    items = 0 if not by_target.get("items") else con.execute(f"""
        insert into {RAW_SCHEMA}.items
        select item_id, item_name, category, price, is_in_stock, coalesce(item_properties, '{{}}'),
               coalesce(updated_at, {now}), {fmt}, {src}, source_row, {now}
        from {stage} where reason is null and target = 'items' order by source_row""").fetchone()[0]
    counts.users_loaded += users
    counts.items_loaded += items
    counts.rows_loaded += users + items
    return counts
