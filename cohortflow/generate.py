"""Realistic, seeded sample data: the files a real user would bring to ``cohortflow ingest``.

``generate`` writes an Amplitude *export* (gzipped JSON lines), a ``users.csv`` with the usual
mess of real CRM exports, and an ``items.csv`` catalogue into one folder. The data are drawn
from a small latent world so that every later stage has something true to find:

* items belong to ~15 categories, have lognormal prices per category and a Zipf-like
  (long-tail) popularity;
* every user has tastes (a Dirichlet concentrated on 1-3 categories), an activity level
  (lognormal), a preferred hour of day (morning, lunchtime or evening shopper, in UTC), cart
  and checkout propensities, and a churn moment (a hazard that falls with activity);
* sessions arrive as a Poisson count per user-day with weekly seasonality; inside a session
  the funnel ``session_start`` -> ``view_item`` -> ``add_to_cart`` -> ``purchase`` runs in time
  order, items drawn from taste x popularity; many carts are abandoned.

Because propensities persist, past purchases predict future purchases; because tastes
persist, purchased categories concentrate on each user's favourites; because sessions
cluster around the preferred hour, time preference is learnable. ``sample_population`` and
``sample_catalogue`` expose that latent truth so models can be evaluated against it.

Everything is vectorised with numpy per chunk of users (memory stays bounded); DuckDB
renders the JSON lines and zlib compresses them on a background thread. The same arguments
always give byte-identical files.
"""

from __future__ import annotations

import concurrent.futures
import csv
import gzip
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

__all__ = [
    "CATEGORIES",
    "EVENT_TYPES",
    "Catalogue",
    "GenerateSummary",
    "Population",
    "catalogue_size",
    "generate",
    "sample_catalogue",
    "sample_population",
]

# --------------------------------------------------------------------------------------
# The latent world's constants. Tuned so that 100k users x 100 days gives ~10M events and
# the behavioural properties documented in the module docstring hold with a margin.
# --------------------------------------------------------------------------------------

SECOND_US = 1_000_000
HOUR_US = 3_600 * SECOND_US
DAY_US = 24 * HOUR_US

#: Event types in the order of their integer codes inside the generator (docs/data-model.md).
EVENT_TYPES: tuple[str, ...] = (
    "session_start",
    "view_item",
    "add_to_cart",
    "purchase",
    "start_subscription",
    "cancel_subscription",
)
_SESSION_START, _VIEW_ITEM, _ADD_TO_CART, _PURCHASE, _START_SUB, _CANCEL_SUB = range(6)


@dataclass(frozen=True)
class _Category:
    name: str
    median_price: float
    materials: tuple[str, ...]
    nouns: tuple[str, ...]


#: The catalogue's categories: name, median price and the words item names are made of.
CATEGORIES: tuple[_Category, ...] = (
    _Category("apparel", 35.0, ("Linen", "Cotton", "Wool", "Denim", "Silk"), ("Shirt", "Dress", "Jacket", "Sweater", "Skirt")),
    _Category("shoes", 70.0, ("Leather", "Suede", "Canvas", "Mesh"), ("Sneaker", "Boot", "Loafer", "Sandal")),
    _Category("accessories", 25.0, ("Leather", "Silver", "Woven", "Felt"), ("Belt", "Wallet", "Scarf", "Cap", "Watch Strap")),
    _Category("beauty", 18.0, ("Rose", "Citrus", "Aloe", "Charcoal"), ("Serum", "Cleanser", "Lip Balm", "Face Mask")),
    _Category("home", 40.0, ("Oak", "Ceramic", "Linen", "Rattan"), ("Lamp", "Vase", "Cushion", "Throw", "Frame")),
    _Category("kitchen", 30.0, ("Cast Iron", "Bamboo", "Steel", "Enamel"), ("Pan", "Knife", "Board", "Kettle", "Mug")),
    _Category("electronics", 120.0, ("Wireless", "Compact", "Smart", "Portable"), ("Speaker", "Headphones", "Charger", "Camera")),
    _Category("books", 15.0, ("Illustrated", "Pocket", "Hardcover", "Annotated"), ("Novel", "Cookbook", "Atlas", "Guide")),
    _Category("toys", 22.0, ("Wooden", "Plush", "Magnetic", "Musical"), ("Puzzle", "Bear", "Train", "Blocks")),
    _Category("sports", 45.0, ("Pro", "Lightweight", "Grip", "Flex"), ("Yoga Mat", "Racket", "Ball", "Dumbbell")),
    _Category("outdoor", 60.0, ("Trail", "Alpine", "Waterproof", "Ultralight"), ("Tent", "Backpack", "Lantern", "Jacket")),
    _Category("grocery", 8.0, ("Organic", "Roasted", "Smoked", "Wild"), ("Coffee", "Tea", "Honey", "Olive Oil", "Granola")),
    _Category("pet", 20.0, ("Cozy", "Chew", "Reflective", "Natural"), ("Bed", "Toy", "Leash", "Treats")),
    _Category("garden", 28.0, ("Terracotta", "Galvanised", "Heirloom", "Cedar"), ("Planter", "Trowel", "Seeds", "Hose")),
    _Category("stationery", 6.0, ("Dotted", "Recycled", "Gel", "Kraft"), ("Notebook", "Pen", "Planner", "Envelopes")),
)
_N_CATEGORIES = len(CATEGORIES)

MIN_ITEMS = 200
MAX_ITEMS = 20_000
MAX_USERS = 5_000_000
MAX_DAYS = 3_660
_ZIPF_EXPONENT = 1.0  # popularity of the item at popularity rank r is proportional to r ** -1
_PRICE_SIGMA = 0.5  # lognormal spread of prices around the category median
_OUT_OF_STOCK_SHARE = 0.05

# Users.
_PRE_PERIOD_SHARE = 0.35  # signed up before the period starts ...
_PRE_PERIOD_DAYS = 365  # ... at most this long before it
_ACTIVITY_SIGMA = 1.2  # lognormal spread of activity (mean 1)
_MEAN_LIFETIME_DAYS = 150.0  # churn hazard for a user of activity 1 ...
_LIFETIME_ACTIVITY_POWER = 0.5  # ... active users stay longer
_TASTE_FOCUS_SIZES = (1, 2, 3)
_TASTE_FOCUS_WEIGHTS = (0.3, 0.45, 0.25)
_TASTE_ALPHA_FAVOURED = 6.0
_TASTE_ALPHA_OTHER = 0.05
# Preferred hour of day (UTC): (share of users, earliest centre, latest centre).
_HOUR_SEGMENTS = ((0.45, 19.0, 21.0), (0.25, 11.5, 13.5), (0.30, 7.0, 9.0))
_IN_HABIT_SHARE = 0.85  # sessions near the preferred hour; the rest fall anywhere in the day
_HABIT_SIGMA_HOURS = 0.75
_SUBSCRIBER_SHARE = 0.12
_CANCELLER_SHARE = 0.35  # of subscribers
_ANNUAL_PLAN_SHARE = 0.25
_PLANS = (("monthly", 9.99), ("annual", 99.0))
_CONSENT_SHARE = 0.78

# Sessions and the funnel.
_SESSIONS_PER_DAY = 0.77  # mean sessions per active user-day at activity 1, before seasonality
_WEEKDAY_FACTOR = np.array([0.90, 0.88, 0.92, 0.97, 1.08, 1.15, 1.10])  # Monday .. Sunday
_MIN_SESSION_GAP_US = 45 * 60 * SECOND_US  # a user's sessions never overlap
_BOUNCE_SHARE = 0.12  # sessions without a single item view
_EXTRA_VIEWS_MEAN = 2.3  # views per non-bounce session = 1 + Poisson(this)
_GAP_MIN_S, _GAP_MEAN_S = 3.0, 35.0  # before each view
_DWELL_MIN_S, _DWELL_MEAN_S = 5.0, 40.0  # on each item page
_CART_BETA = (1.5, 5.5)  # per-user probability that a view ends in add_to_cart
_CHECKOUT_BETA = (0.9, 1.6)  # per-user probability that a session with a cart checks out
_DROPPED_AT_CHECKOUT = 0.10  # cart lines removed at checkout
_CHECKOUT_MIN_S, _CHECKOUT_MEAN_S = 20.0, 90.0
_QUANTITY_P = 0.8  # geometric: quantity 1 with probability 0.8
_MAX_QUANTITY = 5

# Countries: code, share of users, E.164 prefix, local trunk prefix.
_COUNTRIES = (
    ("JP", 0.34, "+81", "0"),
    ("US", 0.25, "+1", ""),
    ("GB", 0.10, "+44", "0"),
    ("DE", 0.08, "+49", "0"),
    ("FR", 0.07, "+33", "0"),
    ("AU", 0.06, "+61", "0"),
    ("CA", 0.05, "+1", ""),
    ("KR", 0.05, "+82", "0"),
)
_PLATFORMS = (("iOS", 0.38), ("Android", 0.34), ("Web", 0.28))
_FIRST_NAMES = (
    "emma", "liam", "olivia", "noah", "ava", "lucas", "mia", "leo", "sofia", "hugo", "yui", "haruto",
    "sakura", "ren", "aoi", "minjun", "seoyeon", "jack", "chloe", "finn", "lena", "paul", "ines", "tom",
)
_LAST_NAMES = (
    "smith", "tanaka", "suzuki", "kim", "park", "mueller", "schmidt", "martin", "bernard", "brown",
    "wilson", "taylor", "sato", "ito", "lee", "dubois", "fischer", "jones", "nguyen", "garcia",
)
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.jp")
_MISSING_EMAIL_SHARE = 0.02
_MESSY_EMAIL_SHARE = 0.04
_MISSING_PHONE_SHARE = 0.05
_LOCAL_PHONE_SHARE = 0.06

# Random streams: one per purpose, so that changing one part never shifts another's draws.
_STREAM_POPULATION, _STREAM_CATALOGUE, _STREAM_PII, _STREAM_SESSIONS = range(4)
_USERS_PER_CHUNK = 2_048  # fixed: the data must not depend on how they are chunked


# --------------------------------------------------------------------------------------
# The latent world
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    """The item catalogue (one row per item), with its latent popularity.

    Attributes
    ----------
    item_id, item_name : np.ndarray
        Strings, e.g. ``"sku-00042"``, ``"Linen Shirt 42"``.
    category : np.ndarray
        Index into ``CATEGORIES`` per item.
    price : np.ndarray
        Price per item (two decimals).
    is_in_stock : np.ndarray
        Boolean per item.
    popularity : np.ndarray
        Probability of the item among its category's items (sums to 1 per category).
    """

    item_id: np.ndarray
    item_name: np.ndarray
    category: np.ndarray
    price: np.ndarray
    is_in_stock: np.ndarray
    popularity: np.ndarray
    # Items ordered by category, and per ordered item ``category + cumulative share``: one
    # ``searchsorted`` then draws items for any mix of categories at once.
    _order: np.ndarray = field(repr=False)
    _key: np.ndarray = field(repr=False)

    @property
    def n_items(self) -> int:
        """Number of items in the catalogue."""
        return int(self.item_id.size)

    def draw(self, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Draw one item per entry of ``category``, by popularity within that category.

        Parameters
        ----------
        category : np.ndarray
            Category index per draw.
        u : np.ndarray
            Uniform numbers in [0, 1), one per draw.

        Returns
        -------
        np.ndarray
            Item index (into this catalogue's arrays) per draw.
        """
        position = np.searchsorted(self._key, category + u, side="right")
        return self._order[np.minimum(position, self._order.size - 1)]


@dataclass(frozen=True)
class Population:
    """The users and their latent traits: the truth behind a generated data set.

    All times are integer microseconds since the Unix epoch (UTC); per-user arrays have one
    entry per user, user ``i`` being ``user_id[i]``.

    Attributes
    ----------
    user_id, device_id : np.ndarray
        Identifiers as written to the files (``"user-000001"``, ``"dev-…"``).
    country, platform : np.ndarray
        Index into the module's country and platform tables.
    signup_us, churn_us : np.ndarray
        When the user signed up and when they stop producing events (may lie after the period).
    taste : np.ndarray
        Shape (users, categories): the user's category preferences (rows sum to 1).
    activity : np.ndarray
        Multiplier on the session rate (lognormal, mean 1).
    preferred_hour : np.ndarray
        Centre of the user's habitual session hour, in hours (UTC, 0-24).
    cart_probability, checkout_probability : np.ndarray
        Chance that a view is added to the cart / that a session with a cart checks out.
    is_subscriber, is_canceller : np.ndarray
        Whether the user starts a subscription in the period, and later cancels it.
    plan : np.ndarray
        Index into the plans (0 monthly, 1 annual).
    has_marketing_consent : np.ndarray
        Consent flag as written to ``users.csv``.
    start_us, end_us : int
        The period the events cover: ``[start_us, end_us)``.
    """

    user_id: np.ndarray
    device_id: np.ndarray
    country: np.ndarray
    platform: np.ndarray
    signup_us: np.ndarray
    churn_us: np.ndarray
    taste: np.ndarray
    activity: np.ndarray
    preferred_hour: np.ndarray
    cart_probability: np.ndarray
    checkout_probability: np.ndarray
    is_subscriber: np.ndarray
    is_canceller: np.ndarray
    plan: np.ndarray
    has_marketing_consent: np.ndarray
    start_us: int
    end_us: int

    @property
    def n_users(self) -> int:
        """Number of users."""
        return int(self.user_id.size)


def catalogue_size(users: int) -> int:
    """Number of catalogue items for a population of ``users``: ``users / 5`` within [200, 20 000]."""
    return int(min(MAX_ITEMS, max(MIN_ITEMS, users // 5)))


def sample_catalogue(users: int, seed: int) -> Catalogue:
    """Draw the item catalogue that ``generate(users=users, seed=seed)`` uses.

    Parameters
    ----------
    users : int
        Population size; the catalogue grows with it (see ``catalogue_size``).
    seed : int
        Random seed (non-negative).

    Returns
    -------
    Catalogue
        Items with categories, lognormal prices and Zipf-like popularity.
    """
    _check_int("users", users, 1, MAX_USERS)
    _check_int("seed", seed, 0, None)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_CATALOGUE]))
    n = catalogue_size(users)

    # Some categories are bigger than others; every category has at least one item.
    category_share = rng.dirichlet(np.full(_N_CATEGORIES, 4.0))
    category = np.concatenate([np.arange(_N_CATEGORIES), rng.choice(_N_CATEGORIES, size=n - _N_CATEGORIES, p=category_share)])
    category = rng.permutation(category)

    medians = np.array([c.median_price for c in CATEGORIES])
    raw_price = rng.lognormal(np.log(medians[category]), _PRICE_SIGMA)
    # Shop prices end in .99 (and nothing costs less than 0.99).
    price = np.round(np.maximum(np.round(raw_price), 1.0) - 0.01, 2)

    rank = rng.permutation(n) + 1.0
    weight = rank**-_ZIPF_EXPONENT
    popularity = weight / np.bincount(category, weights=weight, minlength=_N_CATEGORIES)[category]

    order = np.lexsort((np.arange(n), category))
    sorted_category = category[order]
    cumulative = np.cumsum(popularity[order])
    group_start = np.searchsorted(sorted_category, np.arange(_N_CATEGORIES))
    cumulative -= np.repeat(cumulative[group_start] - popularity[order][group_start], np.bincount(category, minlength=_N_CATEGORIES))
    key = sorted_category + cumulative
    # Pin each category's last key to exactly category + 1 so rounding never leaks a draw
    # into the neighbouring category.
    group_end = np.append(group_start[1:], n) - 1
    key[group_end] = np.arange(_N_CATEGORIES) + 1.0

    materials = rng.random(n)
    nouns = rng.random(n)
    item_name = np.array(
        [
            f"{CATEGORIES[c].materials[int(m * len(CATEGORIES[c].materials))]} "
            f"{CATEGORIES[c].nouns[int(w * len(CATEGORIES[c].nouns))]} {i + 1}"
            for i, (c, m, w) in enumerate(zip(category.tolist(), materials.tolist(), nouns.tolist()))
        ],
        dtype=object,
    )
    item_id = np.array([f"sku-{i + 1:05d}" for i in range(n)], dtype=object)
    is_in_stock = rng.random(n) >= _OUT_OF_STOCK_SHARE
    return Catalogue(item_id, item_name, category, price, is_in_stock, popularity, order, key)


def sample_population(users: int, days: int, seed: int, end: datetime | None = None) -> Population:
    """Draw the users and latent traits that ``generate`` with the same arguments uses.

    Parameters
    ----------
    users : int
        Number of users (1 .. 5 000 000).
    days : int
        Length of the period in days (1 .. 3660); it ends at ``end``.
    seed : int
        Random seed (non-negative).
    end : datetime, optional
        When the period ends (exclusive, UTC; naive datetimes are read as UTC). Default:
        today 00:00 UTC.

    Returns
    -------
    Population
        Per-user identifiers and latent traits.
    """
    _check_int("users", users, 1, MAX_USERS)
    _check_int("days", days, 1, MAX_DAYS)
    _check_int("seed", seed, 0, None)
    end_us = _to_epoch_us(_resolve_end(end))
    start_us = end_us - days * DAY_US
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_POPULATION]))
    n = users

    country = rng.choice(len(_COUNTRIES), size=n, p=[c[1] for c in _COUNTRIES])
    platform = rng.choice(len(_PLATFORMS), size=n, p=[p[1] for p in _PLATFORMS])

    before = rng.random(n) < _PRE_PERIOD_SHARE
    signup_offset = np.where(before, -rng.random(n) * _PRE_PERIOD_DAYS, rng.random(n) * days)
    signup_us = start_us + (signup_offset * DAY_US).astype(np.int64)

    activity = rng.lognormal(-(_ACTIVITY_SIGMA**2) / 2, _ACTIVITY_SIGMA, size=n)
    lifetime_days = rng.exponential(_MEAN_LIFETIME_DAYS * activity**_LIFETIME_ACTIVITY_POWER)
    churn_us = signup_us + (lifetime_days * DAY_US).astype(np.int64)

    # Tastes: a Dirichlet whose mass sits on 1-3 favoured categories (drawn as normalised
    # gammas, row by row at once).
    focus = rng.choice(np.array(_TASTE_FOCUS_SIZES), size=n, p=_TASTE_FOCUS_WEIGHTS)
    favour_rank = rng.random((n, _N_CATEGORIES)).argsort(axis=1).argsort(axis=1)
    alpha = np.where(favour_rank < focus[:, None], _TASTE_ALPHA_FAVOURED, _TASTE_ALPHA_OTHER)
    gammas = rng.gamma(alpha)
    taste = gammas / gammas.sum(axis=1, keepdims=True)

    segment = rng.choice(len(_HOUR_SEGMENTS), size=n, p=[s[0] for s in _HOUR_SEGMENTS])
    low = np.array([s[1] for s in _HOUR_SEGMENTS])[segment]
    high = np.array([s[2] for s in _HOUR_SEGMENTS])[segment]
    preferred_hour = low + rng.random(n) * (high - low)

    cart_probability = rng.beta(*_CART_BETA, size=n)
    checkout_probability = rng.beta(*_CHECKOUT_BETA, size=n)
    is_subscriber = rng.random(n) < _SUBSCRIBER_SHARE
    is_canceller = is_subscriber & (rng.random(n) < _CANCELLER_SHARE)
    plan = (rng.random(n) < _ANNUAL_PLAN_SHARE).astype(np.int8)
    has_marketing_consent = rng.random(n) < _CONSENT_SHARE

    width = max(6, len(str(n)))
    user_id = np.array([f"user-{i:0{width}d}" for i in range(1, n + 1)], dtype=object)
    device_bits = rng.integers(0, 2**63, size=n, dtype=np.int64)
    device_id = np.array([f"dev-{b:016x}" for b in device_bits.tolist()], dtype=object)

    return Population(
        user_id=user_id,
        device_id=device_id,
        country=country,
        platform=platform,
        signup_us=signup_us,
        churn_us=churn_us,
        taste=taste,
        activity=activity,
        preferred_hour=preferred_hour,
        cart_probability=cart_probability,
        checkout_probability=checkout_probability,
        is_subscriber=is_subscriber,
        is_canceller=is_canceller,
        plan=plan,
        has_marketing_consent=has_marketing_consent,
        start_us=start_us,
        end_us=end_us,
    )


# --------------------------------------------------------------------------------------
# Simulation of one chunk of users
# --------------------------------------------------------------------------------------


def _segment_cumsum(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of ``values`` restarted at every segment (segments in order)."""
    total = np.cumsum(values)
    nonempty = lengths[lengths > 0]
    first = np.cumsum(nonempty) - nonempty
    return total - np.repeat(total[first] - values[first], nonempty)


def _position_in_run(group: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal consecutive values of ``group``."""
    if group.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    lengths = np.diff(np.r_[starts, group.size])
    return np.arange(group.size) - np.repeat(starts, lengths)


def _pick_one_per_user(user: np.ndarray, eligible: np.ndarray, key: np.ndarray, n_users: int) -> np.ndarray:
    """For every user, the eligible session with the smallest random key (-1 if none)."""
    candidates = np.flatnonzero(eligible)
    candidates = candidates[np.lexsort((key[candidates], user[candidates]))]
    chosen = np.full(n_users, -1, dtype=np.int64)
    first = np.r_[True, user[candidates][1:] != user[candidates][:-1]] if candidates.size else np.zeros(0, bool)
    chosen[user[candidates[first]]] = candidates[first]
    return chosen


# One row per simulated event; times are microseconds since the epoch, -1 means "none".
_CHUNK_SCHEMA = pa.schema(
    [
        ("user_index", pa.int32()),
        ("event_type", pa.int8()),
        ("event_time", pa.int64()),
        ("session_id", pa.int64()),
        ("item_index", pa.int32()),
        ("quantity", pa.int16()),
        ("plan", pa.int8()),
    ]
)
_EMPTY_CHUNK = _CHUNK_SCHEMA.empty_table()


def _simulate_chunk(pop: Population, catalogue: Catalogue, lo: int, hi: int, seed: int, chunk: int) -> pa.Table:
    """Simulate the events of users ``lo .. hi-1``, ordered by (user, time).

    Returns a compact numeric table; strings are attached only when the file is written.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_SESSIONS, chunk]))
    n_users = hi - lo
    # Calendar days (00:00 UTC), so that hours of day mean the same whatever time ``end`` has;
    # the partial first and last days are cut to the period by the activity window below.
    first_day = pop.start_us // DAY_US * DAY_US
    n_days = -(-(pop.end_us - first_day) // DAY_US)
    day_start = first_day + np.arange(n_days, dtype=np.int64) * DAY_US
    weekday = (day_start // DAY_US + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0

    active_from = np.maximum(pop.signup_us[lo:hi], pop.start_us)
    active_until = np.minimum(pop.churn_us[lo:hi], pop.end_us)
    overlaps = (day_start[None, :] + DAY_US > active_from[:, None]) & (day_start[None, :] < active_until[:, None])
    rate = _SESSIONS_PER_DAY * pop.activity[lo:hi, None] * _WEEKDAY_FACTOR[weekday][None, :] * overlaps
    counts = rng.poisson(rate)

    # --- sessions -------------------------------------------------------------------
    cell_user, cell_day = np.nonzero(counts)
    repeats = counts[cell_user, cell_day]
    s_user = np.repeat(cell_user, repeats)
    s_day = np.repeat(cell_day, repeats)
    n_sessions = s_user.size
    in_habit = rng.random(n_sessions) < _IN_HABIT_SHARE
    habit_hour = pop.preferred_hour[lo:hi][s_user] + rng.normal(0.0, _HABIT_SIGMA_HOURS, n_sessions)
    hour = np.where(in_habit, habit_hour, rng.uniform(0.0, 24.0, n_sessions))
    s_start = day_start[s_day] + (hour * HOUR_US).astype(np.int64)

    keep = (s_start >= active_from[s_user]) & (s_start < active_until[s_user])
    s_user, s_start = s_user[keep], s_start[keep]
    order = np.lexsort((s_start, s_user))
    s_user, s_start = s_user[order], s_start[order]
    # Sessions too close to the user's previous one merge into it: sessions never overlap.
    too_close = np.zeros(s_user.size, dtype=bool)
    too_close[1:] = (s_user[1:] == s_user[:-1]) & (np.diff(s_start) < _MIN_SESSION_GAP_US)
    s_user, s_start = s_user[~too_close], s_start[~too_close]
    n_sessions = s_user.size
    session_id = s_start // 1000  # Amplitude: milliseconds since epoch of the session start

    # --- item views -----------------------------------------------------------------
    bounce = rng.random(n_sessions) < _BOUNCE_SHARE
    n_views = np.where(bounce, 0, 1 + rng.poisson(_EXTRA_VIEWS_MEAN, n_sessions))
    v_session = np.repeat(np.arange(n_sessions), n_views)
    v_user = s_user[v_session]
    n_v = v_session.size
    cumulative_taste = np.cumsum(pop.taste[lo:hi], axis=1)
    v_category = np.minimum((rng.random(n_v)[:, None] >= cumulative_taste[v_user]).sum(axis=1), _N_CATEGORIES - 1)
    v_item = catalogue.draw(v_category, rng.random(n_v))

    gap = (_GAP_MIN_S + rng.exponential(_GAP_MEAN_S, n_v)) * SECOND_US
    dwell = (_DWELL_MIN_S + rng.exponential(_DWELL_MEAN_S, n_v)) * SECOND_US
    step = gap + dwell
    # View k happens after the gaps and dwells before it: start + sum(steps up to k) - dwell_k.
    v_time = s_start[v_session] + (_segment_cumsum(step, n_views) - dwell).astype(np.int64)
    browse_end = s_start + np.bincount(v_session, weights=step, minlength=n_sessions).astype(np.int64)

    # --- carts and checkout ---------------------------------------------------------
    carted = rng.random(n_v) < pop.cart_probability[lo:hi][v_user]
    c_index = np.flatnonzero(carted)
    c_session = v_session[c_index]
    c_time = v_time[c_index] + (dwell[c_index] * rng.uniform(0.2, 0.8, c_index.size)).astype(np.int64)
    c_quantity = np.minimum(rng.geometric(_QUANTITY_P, c_index.size), _MAX_QUANTITY)

    has_cart = np.bincount(c_session, minlength=n_sessions) > 0
    checks_out = has_cart & (rng.random(n_sessions) < pop.checkout_probability[lo:hi][s_user])
    bought = checks_out[c_session] & (rng.random(c_index.size) >= _DROPPED_AT_CHECKOUT)
    checkout_at = browse_end + ((_CHECKOUT_MIN_S + rng.exponential(_CHECKOUT_MEAN_S, n_sessions)) * SECOND_US).astype(np.int64)
    p_session = c_session[bought]
    # Lines of one order are logged a millisecond apart, in cart order.
    p_time = checkout_at[p_session] + _position_in_run(p_session) * 1000

    # --- subscriptions --------------------------------------------------------------
    sub_key = rng.random(n_sessions)
    starts = _pick_one_per_user(s_user, pop.is_subscriber[lo:hi][s_user], sub_key, n_users)
    start_session_of_user = starts[s_user]
    later = (start_session_of_user >= 0) & (np.arange(n_sessions) > start_session_of_user)
    cancels = _pick_one_per_user(s_user, later & pop.is_canceller[lo:hi][s_user], rng.random(n_sessions), n_users)
    sub_sessions = np.concatenate([starts[starts >= 0], cancels[cancels >= 0]])
    sub_type = np.concatenate([np.full((starts >= 0).sum(), _START_SUB), np.full((cancels >= 0).sum(), _CANCEL_SUB)])
    sub_time = browse_end[sub_sessions] + 2 * SECOND_US

    # --- assemble -------------------------------------------------------------------
    n_c, n_p, n_s = c_index.size, p_session.size, sub_sessions.size
    event_session = np.concatenate([np.arange(n_sessions), v_session, c_session, p_session, sub_sessions])
    event_type = np.concatenate(
        [
            np.full(n_sessions, _SESSION_START, np.int8),
            np.full(n_v, _VIEW_ITEM, np.int8),
            np.full(n_c, _ADD_TO_CART, np.int8),
            np.full(n_p, _PURCHASE, np.int8),
            sub_type.astype(np.int8),
        ]
    )
    event_time = np.concatenate([s_start, v_time, c_time, p_time, sub_time])
    item = np.concatenate(
        [np.full(n_sessions, -1), v_item, v_item[c_index], v_item[c_index][bought], np.full(n_s, -1)]
    ).astype(np.int32)
    quantity = np.concatenate(
        [np.zeros(n_sessions + n_v, np.int16), c_quantity.astype(np.int16), c_quantity[bought].astype(np.int16), np.zeros(n_s, np.int16)]
    )
    plan = np.full(event_type.size, -1, np.int8)
    plan[event_type >= _START_SUB] = pop.plan[lo:hi][s_user[sub_sessions]]

    user = s_user[event_session]
    inside = event_time < pop.end_us  # a session running into the end of the period is cut there
    order = np.lexsort((event_type, event_time, user))  # type breaks exact ties in funnel order
    order = order[inside[order]]
    return pa.table(
        {
            "user_index": pa.array((user[order] + lo).astype(np.int32)),
            "event_type": pa.array(event_type[order]),
            "event_time": pa.array(event_time[order]),
            "session_id": pa.array(session_id[event_session][order]),
            "item_index": pa.array(item[order]),
            "quantity": pa.array(quantity[order]),
            "plan": pa.array(plan[order]),
        },
        schema=_CHUNK_SCHEMA,
    )


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

# DuckDB turns one file's events (sorted, strings attached) into Amplitude export lines.
# ``json_object`` gives each event type exactly its documented properties
# (docs/data-model.md). No join and no ORDER BY: with DuckDB's default
# ``preserve_insertion_order`` a projection keeps the rows in the order given, which is
# ~2x faster than sorting the rendered lines.
_EVENTS_SQL = """
select
    $tag || '-' || row_number::varchar                                as "$insert_id",
    user_id,
    device_id,
    event_type,
    strftime(make_timestamp(event_time), '%Y-%m-%d %H:%M:%S.%f')      as event_time,
    session_id,
    case event_type
        when 'session_start' then json_object('platform', platform)
        when 'view_item' then json_object('item_id', item_id, 'category', category, 'price', price)
        when 'add_to_cart' then json_object(
            'item_id', item_id, 'category', category, 'price', price, 'quantity', quantity)
        when 'purchase' then json_object(
            'item_id', item_id, 'category', category, 'price', price, 'quantity', quantity,
            'revenue', round(price * quantity, 2),
            'order_id', 'ord-' || session_id::varchar || '-' || user_number::varchar)
        when 'start_subscription' then json_object('plan', plan, 'price', plan_price)
        when 'cancel_subscription' then json_object('plan', plan)
    end                                                               as event_properties,
    case when event_type = 'session_start' then json_object('country', country)
         else '{}'::json end                                          as user_properties,
    platform
from events_file
"""

_EVENT_FILE_GLOB = "events-*.jsonl.gz"
_USERS_FILE = "users.csv"
_ITEMS_FILE = "items.csv"


@dataclass(frozen=True)
class GenerateSummary:
    """What ``generate`` wrote.

    Attributes
    ----------
    out_dir : Path
        The folder written to.
    event_paths : tuple[Path, ...]
        The ``events-NNNN.jsonl.gz`` files, in order.
    users_path, items_path : Path
        ``users.csv`` and ``items.csv``.
    n_users, n_items, n_events : int
        Rows written.
    events_by_type : dict[str, int]
        Event count per ``event_type`` (every type of ``EVENT_TYPES``, zeros included).
    first_event_at, last_event_at : datetime or None
        Earliest and latest ``event_time`` (UTC, aware); None when no event was generated.
    period_start, period_end : datetime
        The period the events cover, ``[period_start, period_end)`` (UTC, aware).
    seed : int
        The seed used.
    seconds : float
        Wall time taken.
    """

    out_dir: Path
    event_paths: tuple[Path, ...]
    users_path: Path
    items_path: Path
    n_users: int
    n_items: int
    n_events: int
    events_by_type: dict[str, int]
    first_event_at: datetime | None
    last_event_at: datetime | None
    period_start: datetime
    period_end: datetime
    seed: int
    seconds: float

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file written: the event files, then ``users.csv`` and ``items.csv``."""
        return (*self.event_paths, self.users_path, self.items_path)

    def format_text(self) -> str:
        """A short human-readable summary for the command line."""
        span = "no events"
        if self.first_event_at is not None and self.last_event_at is not None:
            span = f"{self.first_event_at:%Y-%m-%d %H:%M} .. {self.last_event_at:%Y-%m-%d %H:%M} UTC"
        files = f"{len(self.event_paths)} event file{'s' if len(self.event_paths) != 1 else ''}"
        by_type = ", ".join(f"{name} {count:,}" for name, count in self.events_by_type.items())
        rate = self.n_events / self.seconds if self.seconds > 0 else 0.0
        return (
            f"Generated {self.n_events:,} events for {self.n_users:,} users and {self.n_items:,} items "
            f"(seed {self.seed}) in {self.seconds:.1f} s ({rate:,.0f} events/s)\n"
            f"  period:  {self.period_start:%Y-%m-%d} .. {self.period_end:%Y-%m-%d} (events {span})\n"
            f"  events:  {by_type}\n"
            f"  written: {self.out_dir}/ ({files}, {self.users_path.name}, {self.items_path.name})"
        )


def generate(
    out_dir: str | os.PathLike[str],
    *,
    users: int = 2000,
    days: int = 60,
    seed: int = 42,
    end: datetime | None = None,
    progress: bool = False,
    events_per_file: int = 2_000_000,
) -> GenerateSummary:
    """Write a realistic, reproducible sample data set into ``out_dir``.

    Writes ``events-0001.jsonl.gz`` ... (Amplitude export: gzipped JSON lines, each file
    sorted by ``event_time``; files split the users, each covers the whole period),
    ``users.csv`` and ``items.csv``. Files of a previous run in ``out_dir`` are replaced.
    The same arguments always give byte-identical files.

    Parameters
    ----------
    out_dir : str or PathLike
        Folder to write into (created if missing).
    users : int, default 2000
        Number of users (1 .. 5 000 000). The catalogue has ``users / 5`` items, at least
        200 and at most 20 000.
    days : int, default 60
        Length of the period in days (1 .. 3660).
    seed : int, default 42
        Random seed (non-negative).
    end : datetime, optional
        The moment the data stop (exclusive). Naive datetimes are read as UTC, aware ones are
        converted. Default: today 00:00 UTC.
    progress : bool, default False
        Show a tqdm progress bar (users simulated) on stderr.
    events_per_file : int, default 2 000 000
        Most events per ``events-NNNN.jsonl.gz`` file (at least 1000).

    Returns
    -------
    GenerateSummary
        Paths written, counts, event time range and wall time.

    Raises
    ------
    ValueError
        If an argument is out of range or of the wrong type; the message names it.
    """
    started = time.perf_counter()
    _check_int("users", users, 1, MAX_USERS)
    _check_int("days", days, 1, MAX_DAYS)
    _check_int("seed", seed, 0, None)
    _check_int("events_per_file", events_per_file, 1000, None)
    if not isinstance(progress, bool):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    end_at = _resolve_end(end)
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise ValueError(f"out_dir must be a folder path, got {out_dir!r}")
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise ValueError(f"out_dir {str(target)!r} exists and is not a folder")
    target.mkdir(parents=True, exist_ok=True)
    for stale in [*target.glob(_EVENT_FILE_GLOB), target / _USERS_FILE, target / _ITEMS_FILE]:
        stale.unlink(missing_ok=True)

    catalogue = sample_catalogue(users, seed)
    pop = sample_population(users, days, seed, end_at)
    users_path = target / _USERS_FILE
    items_path = target / _ITEMS_FILE
    _write_items_csv(items_path, catalogue)
    _write_users_csv(users_path, pop, seed)

    # Identifies this data set in every $insert_id: two data sets generated with different
    # arguments never share an insert_id, so ingesting both does not drop events as duplicates.
    tag = hashlib.sha256(f"{seed}|{users}|{days}|{pop.end_us}".encode()).hexdigest()[:8]
    writer = _EventWriter(target, pop, catalogue, tag, events_per_file)
    by_type = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    first_us: int | None = None
    last_us: int | None = None
    try:
        with tqdm(total=users, unit="user", desc="generate", disable=not progress) as bar:
            for chunk, lo in enumerate(range(0, users, _USERS_PER_CHUNK)):
                hi = min(users, lo + _USERS_PER_CHUNK)
                table = _simulate_chunk(pop, catalogue, lo, hi, seed, chunk)
                if table.num_rows:
                    types = table.column("event_type").to_numpy()
                    times = table.column("event_time").to_numpy()
                    by_type += np.bincount(types, minlength=len(EVENT_TYPES))
                    first_us = int(times.min()) if first_us is None else min(first_us, int(times.min()))
                    last_us = int(times.max()) if last_us is None else max(last_us, int(times.max()))
                writer.add(table)
                bar.update(hi - lo)
        event_paths = writer.close()
    except BaseException:
        writer.abort()
        raise

    return GenerateSummary(
        out_dir=target,
        event_paths=tuple(event_paths),
        users_path=users_path,
        items_path=items_path,
        n_users=users,
        n_items=catalogue.n_items,
        n_events=int(by_type.sum()),
        events_by_type={name: int(count) for name, count in zip(EVENT_TYPES, by_type)},
        first_event_at=None if first_us is None else _from_epoch_us(first_us),
        last_event_at=None if last_us is None else _from_epoch_us(last_us),
        period_start=_from_epoch_us(pop.start_us),
        period_end=_from_epoch_us(pop.end_us),
        seed=seed,
        seconds=time.perf_counter() - started,
    )


class _EventWriter:
    """Buffers simulated chunks and writes them as files of at most ``events_per_file`` events.

    Each file is sorted by time in numpy, gets its strings by ``pyarrow.take`` from small
    per-user / per-item arrays, and is rendered to plain JSON lines by DuckDB; a background
    thread gzips it (zlib releases the GIL) while the next chunks are simulated. Gzip via
    Python rather than DuckDB's own writer: ~4x faster at level 3, and a fixed header
    (mtime 0, no name) keeps the files byte-identical between runs.
    """

    def __init__(self, out_dir: Path, pop: Population, catalogue: Catalogue, tag: str, events_per_file: int) -> None:
        self._out_dir = out_dir
        self._tag = tag
        self._events_per_file = events_per_file
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._rows_written = 0
        self._paths: list[Path] = []
        self._pending: list[concurrent.futures.Future[None]] = []
        self._temporary: list[Path] = []
        self._user_id = pa.array(pop.user_id.tolist(), pa.string())
        self._device_id = pa.array(pop.device_id.tolist(), pa.string())
        self._platform = pa.array([_PLATFORMS[p][0] for p in pop.platform.tolist()], pa.string())
        self._country = pa.array([_COUNTRIES[c][0] for c in pop.country.tolist()], pa.string())
        self._item_id = pa.array(catalogue.item_id.tolist(), pa.string())
        self._category = pa.array([CATEGORIES[c].name for c in catalogue.category.tolist()], pa.string())
        self._price = pa.array(catalogue.price, pa.float64())
        self._event_type = pa.array(list(EVENT_TYPES), pa.string())
        self._plan = pa.array([name for name, _ in _PLANS], pa.string())
        self._plan_price = pa.array([price for _, price in _PLANS], pa.float64())
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gzip")
        self._con = duckdb.connect()
        self._con.execute("set enable_progress_bar = false")
        # One DuckDB thread renders while the gzip thread compresses the previous file: on a
        # small machine this pipeline beats two DuckDB threads (which also double its memory).
        self._con.execute("set threads = 1")

    def add(self, table: pa.Table) -> None:
        """Buffer a chunk (rows ordered by user, time); write full files as they fill up."""
        if table.num_rows == 0:
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        while self._buffered >= self._events_per_file:
            self._flush(self._events_per_file)

    def close(self) -> list[Path]:
        """Write what is left, wait for compression, and return the event files in order."""
        if self._buffered or not self._paths:
            self._flush(self._buffered)  # an empty data set still gets one (empty) file
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
            self._con.close()
        return self._paths

    def abort(self) -> None:
        """Stop after an error: wait for running compression, remove partial files."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._con.close()
        for path in [*self._temporary, *self._paths]:
            path.unlink(missing_ok=True)

    def _flush(self, n_rows: int) -> None:
        table = pa.concat_tables(self._buffer) if self._buffer else _EMPTY_CHUNK
        head, rest = table.slice(0, n_rows), table.slice(n_rows)
        self._buffer = [rest] if rest.num_rows else []
        self._buffered = rest.num_rows

        # Rows arrive ordered by (user, time); a stable sort on time keeps that order for
        # ties, and the row's position before sorting becomes its unique insert id.
        order = np.argsort(head.column("event_time").to_numpy(), kind="stable")
        head = head.take(pa.array(order))
        user = head.column("user_index")
        item = head.column("item_index").to_numpy()
        item = pa.array(item, mask=item < 0)  # null: the event has no item
        plan = head.column("plan").to_numpy()
        plan = pa.array(plan, mask=plan < 0)
        events = pa.table(
            {
                "row_number": pa.array(order.astype(np.int64) + self._rows_written),
                "user_id": self._user_id.take(user),
                "user_number": pc.add(user.cast(pa.int64()), 1),
                "device_id": self._device_id.take(user),
                "event_type": self._event_type.take(head.column("event_type")),
                "event_time": head.column("event_time"),
                "session_id": head.column("session_id"),
                "platform": self._platform.take(user),
                "country": self._country.take(user),
                "item_id": self._item_id.take(item),
                "category": self._category.take(item),
                "price": self._price.take(item),
                "quantity": head.column("quantity"),
                "plan": self._plan.take(plan),
                "plan_price": self._plan_price.take(plan),
            }
        )
        self._rows_written += n_rows

        path = self._out_dir / f"events-{len(self._paths) + 1:04d}.jsonl.gz"
        plain = self._out_dir / f".{path.name}.partial.jsonl"
        self._temporary.append(plain)
        self._con.register("events_file", events)
        self._con.execute(f"copy ({_EVENTS_SQL}) to '{_sql_path(plain)}' (format json)", {"tag": self._tag})
        self._con.unregister("events_file")
        self._paths.append(path)
        self._pending.append(self._pool.submit(_gzip_file, plain, path))


def _gzip_file(source: Path, target: Path) -> None:
    """Gzip ``source`` into ``target`` deterministically, then delete ``source``."""
    with open(source, "rb") as raw, open(target, "wb") as out:
        # mtime=0 and no file name: the bytes depend on the content only.
        with gzip.GzipFile(filename="", mode="wb", compresslevel=3, fileobj=out, mtime=0) as zipped:
            shutil.copyfileobj(raw, zipped, 4 << 20)
    source.unlink()


def _write_items_csv(path: Path, catalogue: Catalogue) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["item_id", "item_name", "category", "price", "is_in_stock"])
        writer.writerows(
            zip(
                catalogue.item_id.tolist(),
                catalogue.item_name.tolist(),
                [CATEGORIES[c].name for c in catalogue.category.tolist()],
                catalogue.price.tolist(),
                ["true" if s else "false" for s in catalogue.is_in_stock.tolist()],
            )
        )


def _write_users_csv(path: Path, pop: Population, seed: int) -> None:
    """users.csv with the mess real CRM exports have: gaps, odd casing, local phone formats."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_PII]))
    n = pop.n_users
    first = rng.integers(0, len(_FIRST_NAMES), n).tolist()
    last = rng.integers(0, len(_LAST_NAMES), n).tolist()
    domain = rng.integers(0, len(_EMAIL_DOMAINS), n).tolist()
    email_mess = rng.random(n)
    phone_mess = rng.random(n)
    digits = rng.integers(0, 10, (n, 10)).tolist()
    created = [_from_epoch_us(int(t)).strftime("%Y-%m-%dT%H:%M:%SZ") for t in pop.signup_us.tolist()]

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "email", "phone", "country", "has_marketing_consent", "created_at"])
        for i in range(n):  # per user, not per event: ~1 s per million users
            country = _COUNTRIES[int(pop.country[i])][0]
            email = f"{_FIRST_NAMES[first[i]]}.{_LAST_NAMES[last[i]]}{i + 1}@{_EMAIL_DOMAINS[domain[i]]}"
            if email_mess[i] < _MISSING_EMAIL_SHARE:
                email = ""
            elif email_mess[i] < _MISSING_EMAIL_SHARE + _MESSY_EMAIL_SHARE:
                email = f" {email.upper()} " if email_mess[i] < _MISSING_EMAIL_SHARE + _MESSY_EMAIL_SHARE / 2 else email.title() + " "
            if phone_mess[i] < _MISSING_PHONE_SHARE:
                phone = ""
            else:
                phone = _phone(country, digits[i], local=phone_mess[i] < _MISSING_PHONE_SHARE + _LOCAL_PHONE_SHARE)
            consent = "true" if pop.has_marketing_consent[i] else "false"
            writer.writerow([pop.user_id[i], email, phone, country, consent, created[i]])


def _phone(country: str, d: list[int], *, local: bool) -> str:
    """A mobile number for ``country``: E.164, or as people type it locally."""
    s = "".join(map(str, d))
    if country == "JP":
        national = f"{(9, 8, 7)[d[0] % 3]}0{s[1:9]}"
        return f"0{national[:2]}-{national[2:6]}-{national[6:]}" if local else f"+81{national}"
    if country in ("US", "CA"):
        national = f"{2 + d[0] % 8}{s[1:3]}{2 + d[3] % 8}{s[4:10]}"
        return f"({national[:3]}) {national[3:6]}-{national[6:]}" if local else f"+1{national}"
    if country == "GB":
        national = f"7{s[1:10]}"
        return f"0{national[:4]} {national[4:]}" if local else f"+44{national}"
    if country == "DE":
        national = f"1{(5, 6, 7)[d[0] % 3]}{s[1:10]}"
        return f"0{national[:3]} {national[3:]}" if local else f"+49{national}"
    if country == "FR":
        national = f"{6 + d[0] % 2}{s[1:9]}"
        pairs = " ".join(("0" + national)[k : k + 2] for k in range(0, 10, 2))
        return pairs if local else f"+33{national}"
    if country == "AU":
        national = f"4{s[1:9]}"
        return f"0{national[:3]} {national[3:6]} {national[6:]}" if local else f"+61{national}"
    # KR
    national = f"10{s[1:9]}"
    return f"0{national[:2]}-{national[2:6]}-{national[6:]}" if local else f"+82{national}"


# --------------------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int, maximum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum:,} and {maximum:,}" if maximum is not None else f"at least {minimum:,}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _resolve_end(end: datetime | None) -> datetime:
    """``end`` as a naive UTC datetime (default: today 00:00 UTC)."""
    if end is None:
        now = datetime.now(timezone.utc)
        return datetime(now.year, now.month, now.day)
    if not isinstance(end, datetime):
        raise ValueError(f"end must be a datetime (UTC), got {end!r}")
    if end.tzinfo is not None:
        end = end.astimezone(timezone.utc).replace(tzinfo=None)
    return end


def _to_epoch_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * SECOND_US + delta.microseconds


def _from_epoch_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
