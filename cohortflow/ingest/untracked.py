"""Counting what the tracking plan does not know, while events are written (see docs/ingest.md).

An event whose ``event_type`` is not in the plan, or a key of its ``event_properties`` the plan does not
list for that type, is loaded like any other: ingest only counts it. Per block of a file, one SQL
aggregate over the rows just inserted gives (event_type, property, events, first / last event_time);
the blocks of a file are summed in Python (a handful of rows) and written once per file to
``raw.untracked_events``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from cohortflow.ingest.sql import lit
from cohortflow.ingest.summary import Untracked
from cohortflow.tracking_plan import TrackingPlan
from cohortflow.warehouse import RAW_SCHEMA


@dataclass
class UntrackedCounts:
    """Accumulated over a file's blocks: (event_type, property) -> [events, first, last]."""

    by_name: dict[tuple[str, str | None], list] = field(default_factory=dict)
    events_with_untracked_properties: int = 0

    def add(self, other: UntrackedCounts) -> None:
        """Add another block's counts to these."""
        for key, (events, first, last) in other.by_name.items():
            mine = self.by_name.get(key)
            if mine is None:
                self.by_name[key] = [events, first, last]
            else:
                mine[0] += events
                mine[1] = min(mine[1], first)
                mine[2] = max(mine[2], last)
        self.events_with_untracked_properties += other.events_with_untracked_properties

    def rows(self) -> list[Untracked]:
        """One :class:`Untracked` per event type x property, sorted (unknown event types first per type)."""
        return [Untracked(event_type, prop, events, first, last)
                for (event_type, prop), (events, first, last)
                in sorted(self.by_name.items(), key=lambda kv: (kv[0][0], kv[0][1] is not None, kv[0][1] or ""))]


def create_plan_table(con: duckdb.DuckDBPyConnection, name: str, plan: TrackingPlan) -> None:
    """Temp table ``name`` (event_type, property): a row per known event type (property NULL) and property."""
    con.execute(f"create or replace temp table {name} (event_type varchar not null, property varchar)")
    pairs = plan.known_pairs()
    for start in range(0, len(pairs), 500):
        chunk = pairs[start:start + 500]
        con.execute(f"insert into {name} values " + ", ".join("(?, ?)" for _ in chunk),
                    [value for pair in chunk for value in pair])


def count_untracked(con: duckdb.DuckDBPyConnection, loaded_sql: str, plan_table: str) -> UntrackedCounts:
    """Count the untracked event types and properties of the rows ``loaded_sql`` selects.

    ``loaded_sql`` yields (source_row, event_type, event_time, event_properties) of the events of one
    block that were inserted. Keys are read with ``json_keys`` in the select list (a lateral join or
    ``json_each`` costs several times more).
    """
    rows = con.execute(f"""
        with loaded as ({loaded_sql}),
        known_types as (select distinct event_type from {plan_table}),
        unknown_types as (
            select event_type, cast(null as varchar) as property, count(*) as events,
                   min(event_time) as first_at, max(event_time) as last_at, cast(null as bigint) as n_events
            from loaded
            where event_type not in (select event_type from known_types)
            group by event_type
        ),
        keys as (
            select source_row, event_type, event_time, unnest(json_keys(event_properties)) as property
            from loaded
            where event_type in (select event_type from known_types)
        ),
        unknown_keys as (
            select * from keys
            where not exists (select 1 from {plan_table} p
                              where p.event_type = keys.event_type and p.property = keys.property)
        )
        select * from unknown_types
        union all
        select event_type, property, count(*), min(event_time), max(event_time), cast(null as bigint)
        from unknown_keys group by event_type, property
        union all
        select null, null, null, null, null, count(distinct source_row) from unknown_keys
    """).fetchall()
    counts = UntrackedCounts()
    for event_type, prop, events, first, last, n_events in rows:
        if event_type is None:
            counts.events_with_untracked_properties = n_events or 0
        else:
            counts.by_name[(event_type, prop)] = [events, first, last]
    return counts


def write_untracked(con: duckdb.DuckDBPyConnection, fmt: str, source_file: str, now: datetime,
                    rows: list[Untracked]) -> None:
    """Append the rows of one file to ``raw.untracked_events``."""
    if not rows:
        return
    con.executemany(
        f"insert into {RAW_SCHEMA}.untracked_events values ({lit(fmt)}, {lit(source_file)}, ?, ?, ?, ?, ?, ?)",
        [[r.event_type, r.property, r.events, r.first_event_time, r.last_event_time, now] for r in rows],
    )
