"""Behaviour of ``cohortflow generate``: file formats, reproducibility, and the signal later stages learn."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cohortflow.generate import (
    CATEGORIES,
    EVENT_TYPES,
    GenerateSummary,
    catalogue_size,
    generate,
    sample_catalogue,
    sample_population,
)

END = datetime(2025, 3, 3)  # a Monday, 00:00 UTC
USERS, DAYS, SEED = 500, 42, 7

EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
REQUIRED = {
    "$insert_id", "user_id", "device_id", "event_type", "event_time",
    "session_id", "event_properties", "user_properties", "platform",
}
PROPERTIES = {
    "session_start": {"platform"},
    "view_item": {"item_id", "category", "price"},
    "add_to_cart": {"item_id", "category", "price", "quantity"},
    "purchase": {"item_id", "category", "price", "quantity", "revenue", "order_id"},
    "start_subscription": {"plan", "price"},
    "cancel_subscription": {"plan"},
}


def read_lines(out_dir: Path) -> dict[str, list[dict]]:
    """Every event file's parsed lines, by file name."""
    files = {}
    for path in sorted(out_dir.glob("events-*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            files[path.name] = [json.loads(line) for line in handle]
    return files


def to_frame(lines: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(lines)
    df["time"] = pd.to_datetime(df["event_time"], format="%Y-%m-%d %H:%M:%S.%f")
    for key in ("item_id", "category", "order_id", "price", "quantity", "revenue"):
        df[key] = [props.get(key) for props in df["event_properties"]]
    df["user_index"] = df["user_id"].str.removeprefix("user-").astype(int) - 1
    return df


def digest(out_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out_dir.iterdir())}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateSummary, dict[str, list[dict]], pd.DataFrame]:
    out = tmp_path_factory.mktemp("generated")
    summary = generate(out, users=USERS, days=DAYS, seed=SEED, end=END)
    files = read_lines(out)
    events = to_frame([line for lines in files.values() for line in lines])
    return summary, files, events


@pytest.fixture(scope="module")
def population():
    return sample_population(USERS, DAYS, SEED, END)


# --- reproducibility ---------------------------------------------------------------------


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    args = dict(users=150, days=20, seed=3, end=END, events_per_file=1000)
    generate(tmp_path / "a", **args)
    generate(tmp_path / "b", **args)
    first, second = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert len(first) > 3  # several event files plus the two CSVs
    assert first == second


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    one = generate(tmp_path / "a", users=150, days=20, seed=1, end=END)
    two = generate(tmp_path / "b", users=150, days=20, seed=2, end=END)
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert all(a[name] != b[name] for name in a)
    assert one.n_events != two.n_events
    # Insert ids differ too, so both data sets can be ingested into one warehouse.
    ids_a = {e["$insert_id"] for lines in read_lines(tmp_path / "a").values() for e in lines}
    ids_b = {e["$insert_id"] for lines in read_lines(tmp_path / "b").values() for e in lines}
    assert not ids_a & ids_b


def test_file_size_does_not_change_the_data(tmp_path: Path) -> None:
    small = generate(tmp_path / "small", users=150, days=20, seed=5, end=END, events_per_file=1000)
    whole = generate(tmp_path / "whole", users=150, days=20, seed=5, end=END)
    assert len(small.event_paths) == -(-small.n_events // 1000)
    assert len(whole.event_paths) == 1
    lines_small = [e for lines in read_lines(tmp_path / "small").values() for e in lines]
    lines_whole = read_lines(tmp_path / "whole")["events-0001.jsonl.gz"]
    assert all(len(lines) <= 1000 for lines in read_lines(tmp_path / "small").values())
    key = lambda e: e["$insert_id"]  # noqa: E731
    assert sorted(lines_small, key=key) == sorted(lines_whole, key=key)


def test_rerun_replaces_previous_files_and_keeps_others(tmp_path: Path) -> None:
    generate(tmp_path, users=200, days=20, seed=1, end=END, events_per_file=1000)
    assert len(list(tmp_path.glob("events-*.jsonl.gz"))) > 2
    (tmp_path / "notes.txt").write_text("mine")
    summary = generate(tmp_path, users=20, days=5, seed=1, end=END)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events-0001.jsonl.gz", "items.csv", "notes.txt", "users.csv"]
    assert sum(len(v) for v in read_lines(tmp_path).values()) == summary.n_events
    assert not list(tmp_path.glob(".*partial*"))


# --- file formats ------------------------------------------------------------------------


def test_every_line_is_an_amplitude_export_event(dataset) -> None:
    summary, files, events = dataset
    start = END - timedelta(days=DAYS)
    insert_ids = set()
    for lines in files.values():
        for event in lines:
            assert set(event) == REQUIRED
            assert len(event["user_id"]) >= 5 and len(event["device_id"]) >= 5
            assert event["event_type"] in EVENT_TYPES
            assert EVENT_TIME.match(event["event_time"]), event["event_time"]
            assert start <= datetime.fromisoformat(event["event_time"]) < END
            assert isinstance(event["session_id"], int)
            assert set(event["event_properties"]) == PROPERTIES[event["event_type"]]
            assert event["user_properties"] in ({}, {"country": event["user_properties"].get("country")})
            assert event["platform"] in ("iOS", "Android", "Web")
            insert_ids.add(event["$insert_id"])
        times = [e["event_time"] for e in lines]
        assert times == sorted(times), "each file is sorted by event_time"
    assert len(insert_ids) == summary.n_events == len(events)
    assert all(isinstance(i, str) and i for i in insert_ids)


def test_item_properties_match_the_catalogue(dataset, tmp_path_factory) -> None:
    summary, _, events = dataset
    with open(summary.items_path, newline="") as handle:
        items = {row["item_id"]: row for row in csv.DictReader(handle)}
    with_item = events[events["item_id"].notna()]
    assert set(with_item["item_id"]) <= set(items)
    sample = with_item.drop_duplicates("item_id")
    for item_id, category, price in zip(sample["item_id"], sample["category"], sample["price"]):
        assert items[item_id]["category"] == category
        assert float(items[item_id]["price"]) == price
    purchases = events[events["event_type"] == "purchase"]
    assert np.allclose(purchases["revenue"], (purchases["price"] * purchases["quantity"]).round(2))
    assert (purchases["quantity"] >= 1).all()


def test_users_csv_is_realistically_messy(dataset, population) -> None:
    summary, _, _ = dataset
    with open(summary.users_path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["user_id", "email", "phone", "country", "has_marketing_consent", "created_at"]
        users = list(reader)
    assert len(users) == USERS == summary.n_users
    assert [u["user_id"] for u in users] == list(population.user_id)
    consent = np.mean([u["has_marketing_consent"] == "true" for u in users])
    assert 0.70 <= consent <= 0.85
    assert {u["has_marketing_consent"] for u in users} == {"true", "false"}
    emails = [u["email"] for u in users]
    assert 0 < sum(e == "" for e in emails) < 0.08 * USERS
    messy = [e for e in emails if e and e != e.strip().lower()]
    assert 0 < len(messy) < 0.10 * USERS
    assert all(re.match(r"^[^@\s]+@[^@\s]+\.[a-z]+$", e.strip().lower()) for e in emails if e)
    phones = [u["phone"] for u in users]
    assert 0 < sum(p == "" for p in phones) < 0.10 * USERS
    local = [p for p in phones if p and not E164.match(p)]
    assert 0 < len(local) < 0.12 * USERS
    assert all(re.match(r"^[0-9() -]+$", p) for p in local)
    created = [datetime.strptime(u["created_at"], "%Y-%m-%dT%H:%M:%SZ") for u in users]
    start = END - timedelta(days=DAYS)
    before = np.mean([c < start for c in created])
    assert 0.2 < before < 0.5  # some users are older than the period, most sign up during it
    assert max(created) < END


def test_items_csv_catalogue() -> None:
    catalogue = sample_catalogue(2000, seed=1)
    assert catalogue.n_items == catalogue_size(2000) == 400
    assert catalogue_size(10) == 200 and catalogue_size(10_000_000 // 2) == 20_000
    counts = np.bincount(catalogue.category, minlength=len(CATEGORIES))
    assert 10 <= len(CATEGORIES) <= 20 and (counts > 0).all()
    assert all(re.match(r"^sku-\d{5}$", i) for i in catalogue.item_id)
    # Prices follow their category: electronics cost far more than stationery.
    names = [c.name for c in CATEGORIES]
    median = {n: np.median(catalogue.price[catalogue.category == k]) for k, n in enumerate(names)}
    assert median["electronics"] > 5 * median["stationery"]
    assert (catalogue.price > 0).all()
    assert 0.9 < catalogue.is_in_stock.mean() < 1.0
    assert np.allclose(np.bincount(catalogue.category, weights=catalogue.popularity), 1.0)


def test_items_csv_file(dataset) -> None:
    summary, _, _ = dataset
    with open(summary.items_path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["item_id", "item_name", "category", "price", "is_in_stock"]
        rows = list(reader)
    assert len(rows) == summary.n_items == catalogue_size(USERS)
    assert {r["category"] for r in rows} == {c.name for c in CATEGORIES}
    assert {r["is_in_stock"] for r in rows} == {"true", "false"}
    assert all(r["item_name"].endswith(" " + str(int(r["item_id"][4:]))) for r in rows)


# --- sessions and the funnel -------------------------------------------------------------


def test_funnel_runs_in_time_order_inside_sessions(dataset) -> None:
    _, _, events = dataset
    events = events.sort_values(["user_id", "session_id", "time"], kind="stable")
    session = events.groupby(["user_id", "session_id"], sort=False)
    first = session.head(1)
    assert (first["event_type"] == "session_start").all()
    assert (session["event_type"].apply(lambda t: (t == "session_start").sum()) == 1).all()
    # session_id is the session start in milliseconds since the epoch.
    start_ms = first["time"].astype("datetime64[us]").astype(np.int64) // 1000
    assert (start_ms.to_numpy() == first["session_id"].to_numpy()).all()

    keys = ["user_id", "session_id", "item_id"]
    views = events.loc[events["event_type"] == "view_item", [*keys, "time"]]
    carts = events.loc[events["event_type"] == "add_to_cart", [*keys, "time"]]
    purchases = events.loc[events["event_type"] == "purchase", [*keys, "time", "order_id"]]
    first_view = views.groupby(keys)["time"].min().rename("viewed")
    first_cart = carts.groupby(keys)["time"].min().rename("carted")
    carts = carts.join(first_view, on=keys)
    assert (carts["viewed"] < carts["time"]).all(), "added to cart before viewing the item in the session"
    purchases = purchases.join(first_cart, on=keys)
    assert len(purchases) > 200
    assert (purchases["carted"] < purchases["time"]).all(), "purchased without adding to cart first"
    last_browse = events[events["event_type"].isin(["view_item", "add_to_cart"])].groupby(["user_id", "session_id"])["time"].max()
    assert (purchases.join(last_browse.rename("browsed"), on=["user_id", "session_id"]).eval("browsed < time")).all()
    assert (purchases.groupby(["user_id", "session_id"])["order_id"].nunique() == 1).all(), "one order per session"
    assert purchases["order_id"].str.len().min() >= 5


def test_many_carts_are_abandoned_at_the_end_of_the_period(dataset) -> None:
    """The seed-000 cohort "added to cart, no purchase within 24 h" is not empty."""
    _, _, events = dataset
    window = events[(events["time"] >= END - timedelta(days=3)) & (events["time"] < END - timedelta(days=1))]
    carts = window[window["event_type"] == "add_to_cart"].groupby("user_id")["time"].max()
    purchases = events[events["event_type"] == "purchase"].groupby("user_id")["time"].max()
    abandoned = [u for u, t in carts.items() if not (u in purchases and purchases[u] >= t)]
    assert len(abandoned) >= 0.3 * len(carts) > 0


def test_subscriptions_start_before_they_are_cancelled(dataset, population) -> None:
    _, _, events = dataset
    subs = events[events["event_type"].isin(["start_subscription", "cancel_subscription"])]
    assert set(subs["event_type"]) == {"start_subscription", "cancel_subscription"}
    for _, rows in subs.groupby("user_id"):
        assert rows["event_type"].value_counts().max() == 1
        if len(rows) == 2:
            start = rows.loc[rows["event_type"] == "start_subscription", "time"].iloc[0]
            assert start < rows.loc[rows["event_type"] == "cancel_subscription", "time"].iloc[0]
    starters = subs.loc[subs["event_type"] == "start_subscription", "user_index"]
    assert population.is_subscriber[starters].all()


def test_no_events_outside_a_users_lifetime(dataset, population) -> None:
    _, _, events = dataset
    t = events["time"].astype("datetime64[us]").astype(np.int64).to_numpy()
    u = events["user_index"].to_numpy()
    assert (t >= population.signup_us[u]).all()
    assert (t < population.churn_us[u]).all()
    # Churn is real: some users who were active early are gone before the end.
    first_week = set(u[t < population.start_us + 7 * 86_400_000_000])
    last_week = set(u[t >= population.end_us - 7 * 86_400_000_000])
    assert len(first_week - last_week) > 0.1 * len(first_week)


# --- the signal later stages learn -------------------------------------------------------


def test_recent_purchases_predict_next_week(dataset) -> None:
    _, _, events = dataset
    cut = END - timedelta(days=7)
    purchases = events[events["event_type"] == "purchase"]
    bought_before = set(purchases.loc[(purchases["time"] >= cut - timedelta(days=14)) & (purchases["time"] < cut), "user_id"])
    bought_after = set(purchases.loc[purchases["time"] >= cut, "user_id"])
    active = set(events.loc[events["time"] < cut, "user_id"])
    buyers = [u in bought_after for u in active & bought_before]
    others = [u in bought_after for u in active - bought_before]
    assert len(buyers) >= 50 and len(others) >= 50
    assert np.mean(buyers) > 2 * np.mean(others)


def test_purchases_concentrate_on_the_users_taste(dataset, population) -> None:
    _, _, events = dataset
    purchases = events[events["event_type"] == "purchase"]
    names = np.array([c.name for c in CATEGORIES])
    top2 = names[np.argsort(-population.taste, axis=1)[:, :2]]
    in_top2 = [cat in top2[u] for u, cat in zip(purchases["user_index"], purchases["category"])]
    uniform = 2 / len(CATEGORIES)
    assert np.mean(in_top2) > max(0.6, 4 * uniform)


def test_popularity_has_a_long_tail(dataset) -> None:
    _, _, events = dataset
    views = events.loc[events["event_type"] == "view_item", "item_id"].value_counts()
    top_decile = views.iloc[: max(1, catalogue_size(USERS) // 10)].sum() / views.sum()
    assert top_decile > 0.35  # a few items get much of the attention ...
    assert len(views) > 0.8 * catalogue_size(USERS)  # ... yet most of the catalogue is seen


def test_events_cluster_around_the_preferred_hour(dataset, population) -> None:
    _, _, events = dataset
    hour = events["time"].dt.hour + events["time"].dt.minute / 60
    distance = np.abs(hour.to_numpy() - population.preferred_hour[events["user_index"].to_numpy()])
    distance = np.minimum(distance, 24 - distance)
    assert np.mean(distance <= 2) > 0.7
    per_user = pd.Series(distance <= 2).groupby(events["user_id"].to_numpy()).mean()
    assert per_user.median() > 0.7
    # Evening shoppers exist as a group (seed 001: "usually buys between 19:00 and 21:00").
    assert ((population.preferred_hour >= 19) & (population.preferred_hour <= 21)).mean() > 0.3


def test_an_end_that_is_not_midnight_keeps_hours_and_bounds(tmp_path: Path) -> None:
    end = datetime(2025, 3, 3, 15, 30)
    summary = generate(tmp_path, users=200, days=10, seed=11, end=end)
    events = to_frame([e for lines in read_lines(tmp_path).values() for e in lines])
    assert events["time"].min() >= end - timedelta(days=10) and events["time"].max() < end
    assert summary.period_start == (end - timedelta(days=10)).replace(tzinfo=timezone.utc)
    population = sample_population(200, 10, 11, end)
    hour = events["time"].dt.hour + events["time"].dt.minute / 60
    distance = np.abs(hour.to_numpy() - population.preferred_hour[events["user_index"].to_numpy()])
    assert np.mean(np.minimum(distance, 24 - distance) <= 2) > 0.7


def test_activity_drives_sessions_with_weekly_seasonality(dataset, population) -> None:
    _, _, events = dataset
    sessions = events[events["event_type"] == "session_start"]
    per_user = sessions.groupby("user_index").size().reindex(range(USERS), fill_value=0)
    active = per_user.to_numpy() > 0
    corr = pd.Series(population.activity[active]).corr(pd.Series(per_user.to_numpy()[active]), method="spearman")
    assert corr > 0.5
    by_weekday = sessions["time"].dt.day_of_week.value_counts()
    assert by_weekday[5] > by_weekday[1]  # Saturday is busier than Tuesday


# --- summary and arguments ---------------------------------------------------------------


def test_summary_matches_the_files(dataset) -> None:
    summary, files, events = dataset
    assert summary.event_paths == tuple(summary.out_dir / name for name in files)
    assert summary.paths[-2:] == (summary.users_path, summary.items_path)
    assert all(p.exists() for p in summary.paths)
    assert summary.events_by_type == events["event_type"].value_counts().reindex(list(EVENT_TYPES), fill_value=0).to_dict()
    assert summary.first_event_at == events["time"].min().to_pydatetime().replace(tzinfo=timezone.utc)
    assert summary.last_event_at == events["time"].max().to_pydatetime().replace(tzinfo=timezone.utc)
    assert summary.period_end == END.replace(tzinfo=timezone.utc)
    assert summary.seconds > 0
    text = summary.format_text()
    assert f"{summary.n_events:,} events" in text and f"{USERS:,} users" in text and "purchase" in text


def test_end_defaults_to_today_midnight_and_accepts_aware_times(tmp_path: Path) -> None:
    summary = generate(tmp_path / "a", users=5, days=2)
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    assert summary.period_end in (today, today + timedelta(days=1))  # the test may straddle midnight
    tokyo = timezone(timedelta(hours=9))
    aware = generate(tmp_path / "b", users=5, days=2, end=datetime(2025, 3, 3, 9, tzinfo=tokyo))
    assert aware.period_end == datetime(2025, 3, 3, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"users": 0}, "users"),
        ({"users": True}, "users"),
        ({"users": "100"}, "users"),
        ({"days": 0}, "days"),
        ({"days": 2.5}, "days"),
        ({"seed": -1}, "seed"),
        ({"events_per_file": 10}, "events_per_file"),
        ({"end": "2025-03-01"}, "end"),
        ({"progress": "yes"}, "progress"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        generate(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        generate(target, users=5, days=2)
    with pytest.raises(ValueError, match="^out_dir "):
        generate(None, users=5, days=2)  # type: ignore[arg-type]


def test_progress_bar_reports_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path, users=30, days=2, progress=True)
    assert "30/30" in capsys.readouterr().err
