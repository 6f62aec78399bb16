"""marts.prediction_features: one row per user and cutoff, and nothing from after a cutoff in its row.

One warehouse holds generated events (150 users, 70 days) plus a few hand-written users whose values
at the window edges are worked out by hand below. It is built as of AS_OF (mid-day) with the default
cutoffs (the scoring cutoff AS_OF, then midnight of AS_OF's day minus 7, 14, ... days). Then:

1. Leakage: the future after the training cutoff CUT is changed twice — events appended (one exactly
   at CUT, one a microsecond later, late arrivals for old days, a user who starts after CUT), built
   incrementally; then events after CUT deleted (every one of a third of the users) and one altered,
   rebuilt from scratch. Every row at a cutoff <= CUT stays exactly equal; the scoring rows change.
2. Hand-computed values: events one second before / exactly at a cutoff, on the first and last day
   of a window, recency, tenure, orders, revenue and ratios, the preferred hour (a tie), the evening
   and weekend shares and the distinct categories / items viewed.
3. The scoring row at a mid-day as_of counts the as_of day's events up to as_of only.
4. Every row and column equals a plain per-cutoff computation from the events (Python below), for
   the default cutoffs and for other `prediction_cutoffs` / `prediction_cutoff_step_days` vars: the
   time of day from each event's UTC hour and weekday, the distinct counts from the view_item events'
   category and item_id (what the computed properties read).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cohortflow.generate import generate
from cohortflow.ingest import ingest_files
from cohortflow.warehouse import connect

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
RELATION = "marts.prediction_features"

AS_OF = datetime(2024, 3, 20, 15, 0, 0)
MIDNIGHT = datetime(2024, 3, 20)
C1, C2, CUT = MIDNIGHT - timedelta(days=7), MIDNIGHT - timedelta(days=14), MIDNIGHT - timedelta(days=21)
DEFAULT_CUTOFFS, DEFAULT_STEP = 20, 7
SECOND = 1 / 86400
KEY_COLUMNS = ("user_id", "cutoff_at", "is_scoring_cutoff", "as_of")
MEASURES = {  # feature prefix -> event type (None: every event); sessions and orders are special
    "events": None, "views": "view_item", "add_to_carts": "add_to_cart", "purchases": "purchase",
    "cancelled_purchases": "cancel_purchase", "subscriptions_started": "start_subscription",
    "subscriptions_cancelled": "cancel_subscription",
}
WINDOWS = {"7d": 7, "30d": 30, "90d": 90, "all_time": None}

pytestmark = pytest.mark.slow  # five dbt invocations on a small warehouse, ~6 s each


# ------------------------------------------------------------------------------------------------
# Hand-written users. (event_id, user_id, event_type, event_time, session_id, properties)

HAND_EVENTS = [
    # hand-edge: events on both sides of the cutoffs C1 = 03-13 00:00 and C2 = 03-06 00:00, of the
    # first day of windows, and of as_of (03-20 15:00).
    ("edge-06", "hand-edge", "session_start", "2024-02-04 23:59:59", 1, {}),
    ("edge-05", "hand-edge", "view_item", "2024-02-05 00:00:00", 1, {}),
    ("edge-04", "hand-edge", "add_to_cart", "2024-03-05 23:59:59", 2, {}),
    ("edge-03", "hand-edge", "purchase", "2024-03-06 00:00:00", 2, {"order_id": "edge-o1", "revenue": 30}),
    ("edge-01", "hand-edge", "view_item", "2024-03-12 23:59:59", 3, {}),
    ("edge-02", "hand-edge", "view_item", "2024-03-13 00:00:00", 3, {}),
    ("edge-12", "hand-edge", "view_item", "2024-03-13 23:59:59", 4, {}),
    ("edge-11", "hand-edge", "view_item", "2024-03-14 00:00:00", 5, {}),
    ("edge-07", "hand-edge", "purchase", "2024-03-20 14:59:59", 6, {"order_id": "edge-o2", "revenue": 12.5}),
    ("edge-08", "hand-edge", "add_to_cart", "2024-03-20 15:00:00", 6, {}),
    ("edge-09", "hand-edge", "purchase", "2024-03-20 15:00:01", 6, {"order_id": "edge-o3", "revenue": 99}),
    ("edge-10", "hand-edge", "view_item", "2024-03-20 23:00:00", 7, {}),
    # hand-buyer: orders on three days (one of two lines, one without order_id), a cancellation,
    # carts and a subscription.
    ("buyer-09", "hand-buyer", "start_subscription", "2024-02-19 11:00:00", 1, {}),
    ("buyer-06", "hand-buyer", "add_to_cart", "2024-02-19 12:00:00", 1, {}),
    ("buyer-01", "hand-buyer", "purchase", "2024-02-20 10:00:00", 2, {"order_id": "B1", "revenue": 10}),
    ("buyer-02", "hand-buyer", "purchase", "2024-02-20 10:05:00", 2, {"order_id": "B1", "revenue": 5}),
    ("buyer-07", "hand-buyer", "add_to_cart", "2024-02-24 12:00:00", 3, {}),
    ("buyer-03", "hand-buyer", "purchase", "2024-02-25 10:00:00", 4, {"order_id": "B2", "revenue": 20}),
    ("buyer-08", "hand-buyer", "add_to_cart", "2024-02-29 12:00:00", 5, {}),
    ("buyer-04", "hand-buyer", "purchase", "2024-03-01 10:00:00", 6, {"revenue": 40}),
    ("buyer-05", "hand-buyer", "cancel_purchase", "2024-03-02 09:00:00", 7, {"revenue": 5}),
    # hand-evening: the time of day and what was viewed. Hours 21 and 08 tie at C1 (twice each);
    # 18:00:00 is evening, 17:59:59 is not; 02-11, 03-09 and 03-10 are a Sunday, a Saturday and a Sunday.
    # Items: i6 is viewed a second before C1's 30 days (02-12 .. 03-12), i5 on their first second, i1
    # on two days, i3 twice on one day; the add to cart of i1 is not a view; i4 is viewed exactly at C1.
    ("evening-01", "hand-evening", "view_item", "2024-02-11 23:59:59", 1, {"item_id": "i6", "category": "garden"}),
    ("evening-02", "hand-evening", "view_item", "2024-02-12 00:00:00", 2, {"item_id": "i5", "category": "music"}),
    ("evening-03", "hand-evening", "view_item", "2024-03-09 21:30:00", 3, {"item_id": "i1", "category": "books"}),
    ("evening-04", "hand-evening", "add_to_cart", "2024-03-09 21:45:00", 3, {"item_id": "i1", "category": "books"}),
    ("evening-05", "hand-evening", "view_item", "2024-03-10 08:15:00", 4, {"item_id": "i2", "category": "books"}),
    ("evening-06", "hand-evening", "view_item", "2024-03-11 08:40:00", 5, {"item_id": "i1", "category": "books"}),
    ("evening-07", "hand-evening", "view_item", "2024-03-12 17:59:59", 6, {"item_id": "i3", "category": "garden"}),
    ("evening-08", "hand-evening", "view_item", "2024-03-12 18:00:00", 6, {"item_id": "i3", "category": "garden"}),
    ("evening-09", "hand-evening", "view_item", "2024-03-13 00:00:00", 7, {"item_id": "i4", "category": "toys"}),
    # hand-newcomer: first seen after C1, so a scoring row only.
    ("new-1", "hand-newcomer", "view_item", "2024-03-15 08:00:00", 1, {}),
    ("new-2", "hand-newcomer", "add_to_cart", "2024-03-15 08:10:00", 1, {}),
    # hand-after-as-of: their only event is a second after as_of: no row at all.
    ("after-1", "hand-after-as-of", "view_item", "2024-03-20 15:00:01", 1, {}),
]

# (user, cutoff) -> the values worked out by hand (any column not listed is checked by the reference).
EXPECTED = {
    ("hand-edge", C2): {
        # 02-04 23:59:59 -> 03-06 00:00 (2024 is a leap year): 30 days and a second.
        "tenure_days": 30 + SECOND, "days_since_last_event": SECOND, "days_since_last_purchase": None,
        "days_since_last_add_to_cart": SECOND,
        # 7 d = 02-28 .. 03-05 (the add_to_cart a second before C2); 30 d starts on 02-05 (its view
        # at 00:00 is in, the session_start a second earlier is not).
        "events_7d": 1, "events_30d": 2, "events_90d": 3, "events_all_time": 3,
        "active_days_7d": 1, "active_days_30d": 2, "active_days_90d": 3,
        "add_to_carts_7d": 1, "views_7d": 0, "views_30d": 1, "purchases_all_time": 0,
        "revenue_all_time": 0.0, "average_order_value": None, "mean_days_between_orders": None,
        "add_to_cart_to_purchase_ratio_30d": 0.0, "view_to_add_to_cart_ratio_30d": 1.0,
    },
    ("hand-edge", C1): {
        # The purchase exactly at C2 (03-06 00:00) is the first day of C1's 7 days; the view a
        # second before C1 is its last; the view exactly at C1 belongs to the next period.
        "days_since_last_event": SECOND, "days_since_last_purchase": 7.0, "days_since_first_purchase": 7.0,
        "events_7d": 2, "events_30d": 3, "events_90d": 5, "events_all_time": 5, "active_days_7d": 2,
        "purchases_7d": 1, "orders_7d": 1, "revenue_7d": 30.0, "add_to_carts_7d": 0, "add_to_carts_30d": 1,
        "events_previous_7d": 1, "events_trend_7d": 1 / 3, "average_order_value": 30.0,
        "add_to_cart_to_purchase_ratio_30d": 1.0,
    },
    ("hand-edge", AS_OF): {
        # 7 d = 03-14 (from 00:00) .. 03-20 up to 15:00: the event at 15:00 is in, 15:00:01 and
        # 23:00 are not; 03-13 23:59:59 is the day before the window.
        "is_scoring_cutoff": True,
        "tenure_days": 44 + (15 * 3600 + 1) / 86400, "days_since_last_event": 0.0,
        "days_since_last_add_to_cart": 0.0,  # the add to cart exactly at as_of
        "days_since_last_purchase": SECOND, "events_7d": 3, "active_days_7d": 2, "events_previous_7d": 3,
        "events_trend_7d": 0.0, "purchases_7d": 1, "add_to_carts_7d": 1, "revenue_7d": 12.5,
        "events_all_time": 10, "purchases_all_time": 2, "orders_all_time": 2, "revenue_all_time": 42.5,
        "average_order_value": 21.25, "mean_days_between_orders": 14.0,
    },
    ("hand-buyer", C1): {
        "tenure_days": 22 + 13 / 24, "days_since_last_purchase": 11 + 14 / 24,
        "purchases_30d": 4, "add_to_carts_30d": 3, "add_to_cart_to_purchase_ratio_30d": 4 / 3,
        "orders_all_time": 3, "purchases_all_time": 4, "cancelled_purchases_all_time": 1,
        "revenue_7d": 0.0, "revenue_30d": 70.0, "revenue_all_time": 70.0, "average_order_value": 70 / 3,
        "mean_days_between_orders": 5.0, "subscriptions_started_all_time": 1, "has_active_subscription": 1,
    },
    ("hand-buyer", CUT): {
        # 7 d = 02-21 .. 02-27; orders on 02-20 (two lines, one order) and 02-25.
        "purchases_7d": 1, "orders_7d": 1, "revenue_7d": 20.0, "purchases_30d": 3, "orders_30d": 2,
        "revenue_30d": 35.0, "average_order_value": 17.5, "mean_days_between_orders": 5.0,
        "cancelled_purchases_all_time": 0,
    },
    ("hand-evening", C2): {
        # 23:59:59 on a Sunday and 00:00 on a Monday: a tie, the earlier hour wins.
        "preferred_hour_utc_90d": 0, "preferred_hour_share_90d": 0.5, "evening_share_90d": 0.5,
        "weekend_share_90d": 0.5, "distinct_items_viewed_30d": 2, "distinct_categories_viewed_30d": 2,
        "days_since_last_add_to_cart": None,
    },
    ("hand-evening", C1): {
        # 90 days: hours 00, 23, 21, 21, 08, 08, 17, 18 -> 08 (ties 21, earlier); evening 23, 21, 21,
        # 18; weekend 02-11, 03-09 (two), 03-10. 30 days: i5, i1, i2, i3 (i6 is a second too early, i4
        # exactly at C1); books, garden (i3), music.
        "preferred_hour_utc_90d": 8, "preferred_hour_share_90d": 2 / 8, "evening_share_90d": 4 / 8,
        "weekend_share_90d": 4 / 8, "distinct_items_viewed_30d": 4, "distinct_categories_viewed_30d": 3,
        "views_30d": 6, "days_since_last_add_to_cart": 3 + 2.25 / 24,
    },
    ("hand-evening", AS_OF): {
        # 30 days = 02-20 .. 03-20: i1, i2, i3, i4; books, garden, toys. The view at C1 (00:00) makes
        # hour 00 a third hour with two events: 00, 08 and 21 tie, 00 wins.
        "preferred_hour_utc_90d": 0, "preferred_hour_share_90d": 2 / 9, "evening_share_90d": 4 / 9,
        "weekend_share_90d": 4 / 9, "distinct_items_viewed_30d": 4, "distinct_categories_viewed_30d": 3,
    },
    ("hand-newcomer", AS_OF): {
        "tenure_days": 5 + 7 / 24, "events_7d": 2, "view_to_add_to_cart_ratio_30d": 1.0,
        "add_to_cart_to_purchase_ratio_30d": 0.0, "days_since_last_purchase": None,
        "average_order_value": None, "has_active_subscription": 0,
        # Views without an item or category count for neither.
        "preferred_hour_utc_90d": 8, "preferred_hour_share_90d": 1.0, "evening_share_90d": 0.0,
        "weekend_share_90d": 0.0, "distinct_items_viewed_30d": 0, "distinct_categories_viewed_30d": 0,
    },
}


# ------------------------------------------------------------------------------------------------
# Warehouse and dbt


def run_dbt(args: list[str], warehouse: Path, scratch: Path, *, check: bool = True, **extra_vars: Any) -> str:
    dbt = Path(sys.executable).parent / "dbt"
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    env.pop("COHORTFLOW_AS_OF", None)
    result = subprocess.run(
        [
            str(dbt), *args,
            "--vars", json.dumps({"warehouse": str(warehouse), "as_of": f"{AS_OF:%Y-%m-%d %H:%M:%S}", **extra_vars}),
            "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
            "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs"),
        ],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    if check:
        assert result.returncode == 0, f"dbt {' '.join(args)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    return result.stdout + result.stderr


def insert_events(warehouse: Path, events: list[tuple], ingested_at: datetime) -> None:
    con = connect(warehouse)
    try:
        con.executemany(
            "insert into raw.events (event_id, insert_id, user_id, device_id, event_type, event_time, session_id, "
            "event_properties, user_properties, source_format, source_file, source_row, ingested_at) "
            "values (?, ?, ?, null, ?, cast(? as timestamp), ?, ?, '{}', 'amplitude', 'hand', ?, ?)",
            [
                (event_id, event_id, user_id, event_type, at, session, json.dumps(properties), row, ingested_at)
                for row, (event_id, user_id, event_type, at, session, properties) in enumerate(events, start=1)
            ],
        )
    finally:
        con.close()


def read_features(warehouse: Path) -> tuple[list[str], dict[tuple[str, datetime], dict[str, Any]]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        cursor = con.execute(f"select * from {RELATION}")
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
    finally:
        con.close()
    by_key = {(row["user_id"], row["cutoff_at"]): row for row in rows}
    assert len(by_key) == len(rows), "two rows for one user and cutoff"
    return columns, by_key


def read_events(warehouse: Path) -> list[dict[str, Any]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        cursor = con.execute(
            "select user_id, event_type, event_at, session_id, order_id, revenue, item_id, category "
            "from intermediate.int_events")
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]
    finally:
        con.close()


@dataclass
class Builds:
    columns: list[str]
    events: list[dict[str, Any]]  # int_events at the first build
    first: dict[tuple[str, datetime], dict[str, Any]]  # built as of AS_OF
    appended: dict[tuple[str, datetime], dict[str, Any]]  # after future events were appended (incremental)
    rewritten: dict[tuple[str, datetime], dict[str, Any]]  # after future events were deleted / altered (full refresh)
    changed_users: set[str]
    appended_users: list[str]
    warehouse: Path
    scratch: Path


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    root = tmp_path_factory.mktemp("prediction_features")
    data = root / "data"
    generate(data, users=150, days=70, seed=23, end=datetime(2024, 3, 21))
    warehouse = root / "cohortflow.duckdb"
    con = connect(warehouse)
    try:
        summary = ingest_files(con, sorted(data.glob("events-*.jsonl.gz")), "amplitude-export", now=datetime(2024, 3, 22))
        assert summary.files and all(f.rows_loaded > 0 for f in summary.files), summary.format_text()
    finally:
        con.close()
    insert_events(warehouse, HAND_EVENTS, datetime(2024, 3, 22))

    run_dbt(["build", "--select", "+prediction_features"], warehouse, root)
    columns, first = read_features(warehouse)
    events = read_events(warehouse)
    generated_users = sorted({user for user, _ in first if not user.startswith("hand-")})
    assert len(generated_users) > 100

    # 1. The future after CUT arrives: appended (ingested later, the incremental path), some of it
    # for days long past (late events), one event exactly at CUT, one a microsecond after it.
    appended_users = generated_users[:5]
    # The view a microsecond after CUT is of the item the user last viewed before CUT (if any): its
    # next view moves closer, which must not change the distinct counts at CUT.
    last_viewed = {
        e["user_id"]: {"item_id": e["item_id"], "category": e["category"]}
        for e in sorted(events, key=lambda e: e["event_at"])
        if e["event_type"] == "view_item" and e["event_at"] < CUT and e["item_id"] is not None
    }
    assert sum(user in last_viewed for user in appended_users) >= 2
    future = []
    for index, user in enumerate(appended_users):
        future += [
            (f"future-{index}-a", user, "purchase", f"{CUT:%Y-%m-%d %H:%M:%S}", 900, {"order_id": f"f{index}", "revenue": 500}),
            (f"future-{index}-b", user, "view_item", f"{CUT:%Y-%m-%d %H:%M:%S}.000001", 900, last_viewed.get(user, {})),
            (f"future-{index}-c", user, "add_to_cart", "2024-03-01 08:00:00", 901, {}),
            (f"future-{index}-d", user, "cancel_subscription", "2024-03-20 10:00:00", 902, {}),
        ]
    future.append(("future-newcomer", "future-newcomer", "view_item", "2024-03-01 12:00:00", 1, {}))
    insert_events(warehouse, future, datetime(2024, 3, 23))
    run_dbt(["build", "--select", "+prediction_features"], warehouse, root)
    _, appended = read_features(warehouse)

    # 2. The future is rewritten: every event at or after CUT of a third of the users disappears,
    # and one event after CUT of another user changes type and time (still after CUT).
    deleted_users = generated_users[5::3]
    altered_user = generated_users[6]
    con = connect(warehouse)
    try:
        con.execute(
            "delete from raw.events where event_time >= ? and list_contains(?, user_id)", [CUT, deleted_users])
        altered = con.execute(
            "select event_id from raw.events where user_id = ? and event_time > ? order by event_time limit 1",
            [altered_user, CUT]).fetchone()
        assert altered is not None
        con.execute(
            "update raw.events set event_type = 'purchase', event_time = event_time + interval '1 hour', "
            "event_properties = '{\"order_id\": \"altered\", \"revenue\": 123.45}' where event_id = ?", [altered[0]])
    finally:
        con.close()
    run_dbt(["build", "--full-refresh", "--select", "+prediction_features"], warehouse, root)
    _, rewritten = read_features(warehouse)
    return Builds(columns, events, first, appended, rewritten,
                  {*appended_users, *deleted_users, altered_user, "future-newcomer"}, appended_users, warehouse, root)


# ------------------------------------------------------------------------------------------------
# The reference: each cutoff computed on its own from the events, the plain way


def cutoffs_for(as_of: datetime, count: int, step: int) -> list[datetime]:
    midnight = datetime.combine(as_of.date(), datetime.min.time())
    return [as_of, *(midnight - timedelta(days=k * step) for k in range(1, count + 1))]


def reference_features(events: list[dict[str, Any]], as_of: datetime, cutoffs: list[datetime]) -> dict[tuple[str, datetime], dict[str, Any]]:
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_user[event["user_id"]].append(event)
    rows = {}
    for cutoff in cutoffs:
        scoring = cutoff == as_of
        last_day: date = as_of.date() if scoring else cutoff.date() - timedelta(days=1)
        for user, user_events in by_user.items():
            seen = [e for e in user_events if (e["event_at"] <= as_of if scoring else e["event_at"] < cutoff)]
            if seen:
                rows[(user, cutoff)] = reference_row(seen, cutoff, scoring, last_day, as_of)
    return rows


def reference_row(seen: list[dict[str, Any]], cutoff: datetime, scoring: bool, last_day: date, as_of: datetime) -> dict[str, Any]:
    def days_before(event: dict[str, Any]) -> int:
        return (last_day - event["event_at"].date()).days

    def within(n: int | None) -> list[dict[str, Any]]:
        return [e for e in seen if n is None or days_before(e) < n]

    def days_since(moment: datetime | None) -> float | None:
        return None if moment is None else (cutoff - moment).total_seconds() / 86400

    def per_day_distinct(events: list[dict[str, Any]], key) -> int:
        days: dict[date, set] = defaultdict(set)
        for e in events:
            value = key(e)
            if value is not None:
                days[e["event_at"].date()].add(value)
        return sum(len(values) for values in days.values())

    def revenue(events: list[dict[str, Any]]) -> Decimal:
        total = Decimal(0)
        for e in events:
            if e["revenue"] is not None and e["event_type"] == "purchase":
                total += e["revenue"]
            elif e["revenue"] is not None and e["event_type"] == "cancel_purchase":
                total -= abs(e["revenue"])
        return total

    purchases = [e for e in seen if e["event_type"] == "purchase"]
    row: dict[str, Any] = {
        "user_id": seen[0]["user_id"], "cutoff_at": cutoff, "is_scoring_cutoff": scoring, "as_of": as_of,
        "tenure_days": days_since(min(e["event_at"] for e in seen)),
        "days_since_last_event": days_since(max(e["event_at"] for e in seen)),
        "days_since_first_purchase": days_since(min((e["event_at"] for e in purchases), default=None)),
        "days_since_last_purchase": days_since(max((e["event_at"] for e in purchases), default=None)),
    }
    for suffix, n in WINDOWS.items():
        row[f"active_days_{suffix}"] = len({e["event_at"].date() for e in within(n)})
    for prefix, event_type in MEASURES.items():
        for suffix, n in WINDOWS.items():
            row[f"{prefix}_{suffix}"] = sum(1 for e in within(n) if event_type is None or e["event_type"] == event_type)
        if prefix == "events":
            for suffix, n in WINDOWS.items():
                row[f"sessions_{suffix}"] = per_day_distinct(within(n), lambda e: e["session_id"])
    for suffix, n in WINDOWS.items():
        # An order: a distinct order_id of the day's purchase lines, or a line without one.
        row[f"orders_{suffix}"] = per_day_distinct(
            [e for e in within(n) if e["event_type"] == "purchase"],
            lambda e: ("order", e["order_id"]) if e["order_id"] is not None else ("line", id(e)))
    recent, before = row["events_7d"], sum(1 for e in seen if 7 <= days_before(e) < 14)
    row["events_previous_7d"] = before
    row["events_trend_7d"] = 0.0 if recent + before == 0 else (recent - before) / (recent + before)
    row["events_per_active_day_30d"] = row["events_30d"] / row["active_days_30d"] if row["active_days_30d"] else None
    for suffix, n in WINDOWS.items():
        row[f"revenue_{suffix}"] = float(revenue(within(n)))
    orders = row["orders_all_time"]
    row["average_order_value"] = float(revenue(seen)) / orders if orders else None
    order_days = sorted({e["event_at"].date() for e in purchases})
    row["mean_days_between_orders"] = (
        (order_days[-1] - order_days[0]).days / (len(order_days) - 1) if len(order_days) >= 2 else None)
    row["view_to_add_to_cart_ratio_30d"] = row["add_to_carts_30d"] / row["views_30d"] if row["views_30d"] else None
    row["add_to_cart_to_purchase_ratio_30d"] = (
        row["purchases_30d"] / row["add_to_carts_30d"] if row["add_to_carts_30d"] else None)
    row["has_active_subscription"] = int(row["subscriptions_started_all_time"] > row["subscriptions_cancelled_all_time"])
    carts = [e for e in seen if e["event_type"] == "add_to_cart"]
    row["days_since_last_add_to_cart"] = days_since(max((e["event_at"] for e in carts), default=None))
    # Time of day, last 90 days (UTC): the hour with the most events, the earliest on a tie.
    recent = within(90)
    per_hour: dict[int, int] = defaultdict(int)
    for e in recent:
        per_hour[e["event_at"].hour] += 1
    busiest = max(per_hour.values(), default=0)
    row["preferred_hour_utc_90d"] = min((h for h, n in per_hour.items() if n == busiest), default=None)
    share = lambda n: n / len(recent) if recent else None  # noqa: E731
    row["preferred_hour_share_90d"] = share(busiest)
    row["evening_share_90d"] = share(sum(1 for e in recent if e["event_at"].hour >= 18))
    row["weekend_share_90d"] = share(sum(1 for e in recent if e["event_at"].weekday() >= 5))
    # Distinct values of the view_item events of the last 30 days (NULLs are no value).
    views = [e for e in within(30) if e["event_type"] == "view_item"]
    row["distinct_categories_viewed_30d"] = len({e["category"] for e in views if e["category"] is not None})
    row["distinct_items_viewed_30d"] = len({e["item_id"] for e in views if e["item_id"] is not None})
    return row


def same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) and isinstance(actual, float):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)
    return type(actual) is type(expected) and actual == expected


def differences(actual: dict[tuple, dict[str, Any]], expected: dict[tuple, dict[str, Any]]) -> list[str]:
    problems = []
    if set(actual) != set(expected):
        problems.append(f"rows only in the table: {sorted(set(actual) - set(expected))[:5]}; "
                        f"only in the reference: {sorted(set(expected) - set(actual))[:5]}")
    for key in sorted(set(actual) & set(expected)):
        for column, value in expected[key].items():
            if not same(actual[key][column], value):
                problems.append(f"{key} {column}: table {actual[key][column]!r}, expected {value!r}")
        if len(problems) > 10:
            break
    return problems


# ------------------------------------------------------------------------------------------------
# Tests


def test_rows_at_cutoffs_up_to_a_changed_future_stay_exactly_equal(builds: Builds) -> None:
    for name, later in (("appended", builds.appended), ("rewritten", builds.rewritten)):
        past = {key: row for key, row in builds.first.items() if key[1] <= CUT}
        past_later = {key: row for key, row in later.items() if key[1] <= CUT}
        assert len(past) > 200
        assert past_later == past, name  # exactly: floats included

        # The change was real: the same users' rows after CUT moved, the scoring rows first.
        changed_scoring = {
            user for (user, cutoff), row in later.items()
            if row["is_scoring_cutoff"] and builds.first.get((user, cutoff)) != row
        }
        assert changed_scoring and changed_scoring <= builds.changed_users, name
        assert any(later.get(key) != row for key, row in builds.first.items() if key[1] > CUT and key[0] in changed_scoring)
    # A user whose first event came after CUT has rows at the later cutoffs only.
    assert {cutoff for user, cutoff in builds.appended if user == "future-newcomer"} == {AS_OF, C1, C2}
    # The purchase exactly at CUT is in the next period: the first cutoff after CUT sees it.
    for user in builds.appended_users:
        before, after = builds.first.get((user, C2)), builds.appended[(user, C2)]
        assert after["purchases_7d"] == (before["purchases_7d"] if before else 0) + 1
        assert math.isclose(after["revenue_7d"], (before["revenue_7d"] if before else 0.0) + 500)
        # The add to cart of 03-01 08:00 is the latest one C2 (03-06) sees, unless a later one was there.
        assert after["days_since_last_add_to_cart"] <= 4 + 16 / 24 + 1e-9


def test_hand_worked_values_at_the_window_edges(builds: Builds) -> None:
    problems = []
    for (user, cutoff), values in EXPECTED.items():
        row = builds.first.get((user, cutoff))
        if row is None:
            problems.append(f"no row for {user} at {cutoff}")
            continue
        problems += [f"{user} at {cutoff:%m-%d %H:%M} {column}: {row[column]!r}, by hand {value!r}"
                     for column, value in values.items() if not same(row[column], value)]
    assert problems == []
    cutoffs = lambda user: sorted(c for u, c in builds.first if u == user)  # noqa: E731
    # hand-edge's first event is 02-04 23:59:59: the cutoff of 02-07 sees it, 01-31 does not.
    assert cutoffs("hand-edge") == [MIDNIGHT - timedelta(days=7 * k) for k in range(6, 0, -1)] + [AS_OF]
    assert cutoffs("hand-newcomer") == [AS_OF]
    assert cutoffs("hand-after-as-of") == []


def test_the_scoring_row_counts_the_as_of_day_up_to_as_of_only(builds: Builds) -> None:
    row = builds.first[("hand-edge", AS_OF)]
    assert row["is_scoring_cutoff"] is True and row["cutoff_at"] == row["as_of"] == AS_OF
    # 15:00:01 (a purchase) and 23:00 (a view) on the as_of day are not counted; 15:00 is.
    assert (row["events_all_time"], row["purchases_all_time"], row["add_to_carts_all_time"]) == (10, 2, 2)
    assert row["revenue_all_time"] == 42.5
    seen = [e for e in builds.events if e["event_at"] <= AS_OF]
    expected = reference_features(seen, AS_OF, [AS_OF])
    actual = {key: row for key, row in builds.first.items() if row["is_scoring_cutoff"]}
    assert sum(1 for (_, cutoff) in actual if cutoff == AS_OF) == len(actual) > 100
    assert differences(actual, expected) == []
    # Generated events exist after as_of on the as_of day, so the cut was exercised.
    assert any(AS_OF < e["event_at"] < MIDNIGHT + timedelta(days=1) for e in builds.events)


def test_every_row_equals_a_per_cutoff_computation_from_events(builds: Builds) -> None:
    assert builds.columns[:4] == list(KEY_COLUMNS)
    expected = reference_features(builds.events, AS_OF, cutoffs_for(AS_OF, DEFAULT_CUTOFFS, DEFAULT_STEP))
    assert set(builds.columns) == set(next(iter(expected.values())))
    assert differences(builds.first, expected) == []
    # Enough happened for the comparison to mean something.
    assert sum(row["orders_7d"] for row in builds.first.values()) > 50
    assert sum(row["sessions_30d"] for row in builds.first.values()) > 500
    assert {row["cutoff_at"] for row in builds.first.values()} >= {AS_OF, C1, C2, CUT}


def test_cutoff_vars_choose_how_many_cutoffs_and_how_far_apart(builds: Builds) -> None:
    run_dbt(["run", "--select", "prediction_features"], builds.warehouse, builds.scratch,
            prediction_cutoffs=3, prediction_cutoff_step_days=2)
    _, actual = read_features(builds.warehouse)
    cutoffs = cutoffs_for(AS_OF, 3, 2)
    assert {cutoff for _, cutoff in actual} == set(cutoffs)
    assert differences(actual, reference_features(read_events(builds.warehouse), AS_OF, cutoffs)) == []

    output = run_dbt(["run", "--select", "prediction_features"], builds.warehouse, builds.scratch, check=False,
                     prediction_cutoff_step_days=0)
    assert "Invalid value for var 'prediction_cutoff_step_days': '0'" in output, output[-3000:]
