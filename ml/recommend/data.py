"""Interactions → a user × item matrix with stable index maps, and the time split that judges models.

The inputs are two pandas frames, the shapes the dbt export models hand to ``ml``:

- *interactions*: ``user_id`` (str), ``item_id`` (str), ``event_at`` (naive UTC timestamp),
  ``event_type`` (str), ``weight`` (float, from the recommendation's declaration, e.g. view 1,
  add to cart 3, purchase 5) and ``is_outcome`` (bool: the event the recommendation should cause).
- *items*: ``item_id``, ``item_name``, ``category``, ``price``, ``is_in_stock`` and optionally
  ``description``. The catalogue may lack items seen in events and hold items nobody touched yet.

Index maps are **sorted ids**, not first-seen order, so the same events in any row order give the
same matrix, the same model and the same recommendations. The item universe is the union of the
catalogue and the items seen in events: a brand-new catalogue item has a column (all zeros) so
that the content model can recommend it.

Matrix values are the **sum of the event weights** per (user, item). Time decay is off by
default; with ``half_life_days`` every event's weight is multiplied by ``0.5 ** (age / half_life)``
where the age is measured from ``reference_at`` (the cutoff), so an event one half-life old counts
half. Decay is useful when tastes drift (fashion); it is not used by :mod:`~ml.recommend.selection`
unless asked for, because the models already see only events before the cutoff and the
popularity-type models have their own windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

INTERACTION_COLUMNS = ("user_id", "item_id", "event_at", "event_type", "weight", "is_outcome")
ITEM_COLUMNS = ("item_id", "item_name", "category", "price", "is_in_stock")


def normalise_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """The interaction columns with canonical dtypes (ids as str, naive timestamps, float, bool).

    Raises ``KeyError`` naming missing columns and ``ValueError`` for missing ids or timestamps or
    for negative / non-finite weights (a negative weight would mean "dislike", which none of the
    models here is built for).
    """
    missing = [c for c in INTERACTION_COLUMNS if c not in interactions.columns]
    if missing:
        raise KeyError(f"interactions lack the columns {missing}")
    frame = pd.DataFrame(
        {
            "user_id": interactions["user_id"].astype(str).to_numpy(),
            "item_id": interactions["item_id"].astype(str).to_numpy(),
            "event_at": pd.to_datetime(interactions["event_at"]).to_numpy(),
            "event_type": interactions["event_type"].astype(str).to_numpy(),
            "weight": pd.to_numeric(interactions["weight"]).astype("float64").to_numpy(),
            "is_outcome": interactions["is_outcome"].astype(bool).to_numpy(),
        }
    )
    if interactions["user_id"].isna().any() or interactions["item_id"].isna().any():
        raise ValueError("interactions have missing user_id or item_id")
    if frame["event_at"].isna().any():
        raise ValueError("interactions have missing event_at")
    weights = frame["weight"].to_numpy()
    if weights.size and not (np.isfinite(weights).all() and weights.min() >= 0):
        raise ValueError("interaction weights must be finite and non-negative")
    return frame


def utc_timestamp(value: Any) -> pd.Timestamp:
    """A naive UTC ``pd.Timestamp`` (the project's convention); aware values are converted."""
    moment = pd.Timestamp(value)
    if moment.tzinfo is not None:  # the project's convention: naive means UTC
        moment = moment.tz_convert("UTC").tz_localize(None)
    return moment


@dataclass(frozen=True)
class InteractionMatrix:
    """What the models are fitted on: weights, conversions, index maps and the raw event times.

    Attributes
    ----------
    matrix
        ``csr_matrix`` users × items, float32: summed (optionally decayed) weights.
    converted
        ``csr_matrix`` users × items, float32 1.0 where the user had at least one outcome event on
        the item (what serving excludes with ``exclude_converted``).
    user_ids, item_ids
        Sorted id arrays; row ``r`` is ``user_ids[r]``, column ``c`` is ``item_ids[c]``.
    events
        One row per event: ``user_row``, ``item_column``, ``event_at``, ``weight`` (undecayed),
        ``is_outcome``. The popularity and trending models count windows on it.
    reference_at
        The moment the matrix describes: every event is strictly before it (when it was given) and
        windows ("last 30 days") end at it.
    half_life_days
        The decay applied to ``matrix`` (``None``: none).
    """

    matrix: sp.csr_matrix
    converted: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    events: pd.DataFrame
    reference_at: pd.Timestamp
    half_life_days: float | None = None

    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])

    def user_rows(self, user_ids: Iterable[Any]) -> np.ndarray:
        """Row of each user id (int64), ``-1`` for users without events before ``reference_at``."""
        values = pd.Index(np.asarray(list(user_ids), dtype=object).astype(str))
        return pd.Index(self.user_ids).get_indexer(values).astype(np.int64)

    def item_columns(self, item_ids: Iterable[Any]) -> np.ndarray:
        """Column of each item id (int64), ``-1`` for items the matrix does not know."""
        values = pd.Index(np.asarray(list(item_ids), dtype=object).astype(str))
        return pd.Index(self.item_ids).get_indexer(values).astype(np.int64)

    def history_sizes(self) -> np.ndarray:
        """Distinct items each user interacted with (int64 per row)."""
        return np.diff(self.matrix.indptr).astype(np.int64)

    def item_weight(self) -> np.ndarray:
        """Total (decayed) weight per item: the tie-break for models that score many items 0."""
        return np.asarray(self.matrix.sum(axis=0)).ravel().astype(np.float64)

    def outcome_counts(self, start: Any = None, end: Any = None) -> np.ndarray:
        """Outcome events per item with ``start <= event_at < end`` (``None``: unbounded)."""
        events = self.events
        mask = events["is_outcome"].to_numpy()
        times = events["event_at"].to_numpy()
        if start is not None:
            mask = mask & (times >= np.datetime64(utc_timestamp(start)))
        if end is not None:
            mask = mask & (times < np.datetime64(utc_timestamp(end)))
        columns = events["item_column"].to_numpy()[mask]
        return np.bincount(columns, minlength=self.n_items).astype(np.float64)


def build_matrix(
    interactions: pd.DataFrame,
    *,
    reference_at: Any = None,
    item_ids: Iterable[Any] | None = None,
    half_life_days: float | None = None,
) -> InteractionMatrix:
    """Build the :class:`InteractionMatrix` of the events before ``reference_at``.

    Parameters
    ----------
    interactions
        Events (see the module docstring for the columns).
    reference_at
        Only events strictly before it are used, and decay ages and popularity windows are
        measured from it. ``None``: every event is used and the latest event time is the reference.
    item_ids
        The catalogue's items: they get columns even without events (new items). Items seen in
        events get columns whether listed or not.
    half_life_days
        Exponential time decay of the weights (``None``: no decay).
    """
    frame = normalise_interactions(interactions)
    if reference_at is not None:
        reference = utc_timestamp(reference_at)
        frame = frame[frame["event_at"] < reference]
    elif len(frame):
        reference = pd.Timestamp(frame["event_at"].max())
    else:
        raise ValueError("no interactions and no reference_at: nothing to describe")
    if half_life_days is not None and half_life_days <= 0:
        raise ValueError("half_life_days must be positive")

    catalogue = [] if item_ids is None else [str(i) for i in item_ids]
    items = np.unique(np.concatenate([np.asarray(catalogue, dtype=object), frame["item_id"].to_numpy()]).astype(str))
    users = np.unique(frame["user_id"].to_numpy().astype(str))
    rows = pd.Index(users).get_indexer(frame["user_id"].to_numpy())
    columns = pd.Index(items).get_indexer(frame["item_id"].to_numpy())
    weights = frame["weight"].to_numpy()
    if half_life_days is not None:
        age_days = (reference - frame["event_at"]).dt.total_seconds().to_numpy() / 86400.0
        weights = weights * np.power(0.5, age_days / half_life_days)

    shape = (users.size, items.size)
    # csr_matrix((data, (row, col))) sums duplicate (user, item) pairs: the "summed weights".
    matrix = sp.csr_matrix((weights.astype(np.float32), (rows, columns)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    outcome = frame["is_outcome"].to_numpy()
    converted = sp.csr_matrix(
        (np.ones(int(outcome.sum()), dtype=np.float32), (rows[outcome], columns[outcome])),
        shape=shape,
        dtype=np.float32,
    )
    converted.sum_duplicates()
    converted.data[:] = 1.0
    events = pd.DataFrame(
        {
            "user_row": rows.astype(np.int64),
            "item_column": columns.astype(np.int64),
            "event_at": frame["event_at"].to_numpy(),
            "weight": frame["weight"].to_numpy(),
            "is_outcome": outcome,
        }
    )
    return InteractionMatrix(
        matrix=matrix,
        converted=converted,
        user_ids=users.astype(object),
        item_ids=items.astype(object),
        events=events,
        reference_at=reference,
        half_life_days=half_life_days,
    )


@dataclass(frozen=True)
class TimeSplit:
    """Events before ``cutoff`` (train) and the outcome events of ``[cutoff, end)`` (test)."""

    train: pd.DataFrame
    test: pd.DataFrame
    cutoff: pd.Timestamp
    end: pd.Timestamp


def time_split(interactions: pd.DataFrame, cutoff: Any, test_days: float) -> TimeSplit:
    """Split at ``cutoff``: train = every event before it, test = outcome events in the next days.

    The split is by time, never random: a model is always judged on what happened *after* the
    events it learnt from, the way it will be used. Test holds only outcome events because an
    outcome (a purchase) is what a recommendation is for; views after the cutoff are not read.
    """
    if test_days <= 0:
        raise ValueError("test_days must be positive")
    frame = normalise_interactions(interactions)
    start = utc_timestamp(cutoff)
    end = start + pd.Timedelta(days=test_days)
    times = frame["event_at"]
    train = frame[times < start].reset_index(drop=True)
    test = frame[(times >= start) & (times < end) & frame["is_outcome"]].reset_index(drop=True)
    return TimeSplit(train=train, test=test, cutoff=start, end=end)


def relevant_items(split: TimeSplit, *, new_items_only: bool = True) -> dict[str, list[str]]:
    """Per user, the items converted on in the test period: what a good model should have shown.

    With ``new_items_only`` (the default) an item the user had already converted on before the
    cutoff is not relevant: serving excludes converted items, so counting re-purchases would
    reward a model for something it is never allowed to do. Users with no relevant item are absent.
    Item lists are sorted.
    """
    test = split.test[["user_id", "item_id"]].drop_duplicates()
    if new_items_only and len(test):
        before = split.train.loc[split.train["is_outcome"], ["user_id", "item_id"]].drop_duplicates()
        merged = test.merge(before, on=["user_id", "item_id"], how="left", indicator=True)
        test = merged.loc[merged["_merge"] == "left_only", ["user_id", "item_id"]]
    grouped = test.sort_values(["user_id", "item_id"]).groupby("user_id", sort=True)["item_id"]
    return {str(user): list(values) for user, values in grouped}
