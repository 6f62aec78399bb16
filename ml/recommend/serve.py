"""Recommendations for a list of users: the model, a fallback for newcomers, a random control group.

:func:`recommend_for_users` turns a fitted model (or a :class:`~ml.recommend.selection.Selection`)
into the rows a recommendation table holds: ``user_id, rank, item_id, score, is_control, source``.
Every user falls in exactly one group:

- **control** — a deterministic share of users (:func:`control_assignment`) gets ``n`` random
  candidate items, flagged ``is_control`` and ``source = 'control_random'``. Comparing their
  conversions with the others' measures what the model adds (treatment vs control).
- **model** — users with at least ``min_history`` items in the model's matrix: the model's top ``n``,
  ``source`` = the model's name.
- **fallback** — everyone else (new users): trending or popular items, ``source =
  'fallback_trending'`` / ``'fallback_popular'``.

Exclusions hold for all three groups: items listed in ``exclude_items``, items outside
``candidate_items``, out-of-stock items (``in_stock_only``) and, per user, items they already
converted on (``exclude_converted``). Output is deterministic for a seed: the model is; the control
assignment and the control lists are hashes of the seed, the user id and the item id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ml.recommend.candidates import Popularity, Recommender, Trending, top_n
from ml.recommend.data import InteractionMatrix

FALLBACKS = {"trending": (Trending, "fallback_trending"), "popular": (Popularity, "fallback_popular")}
CONTROL_SOURCE = "control_random"
OUTPUT_COLUMNS = ("user_id", "rank", "item_id", "score", "is_control", "source")
_EMPTY_DTYPES = {"user_id": object, "rank": np.int64, "item_id": object, "score": np.float64,
                 "is_control": bool, "source": object}


def _hash64(texts: Iterable[str]) -> np.ndarray:
    """First 8 bytes (big-endian) of the SHA-256 of each text, as uint64."""
    return np.array(
        [int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") for text in texts],
        dtype=np.uint64,
    )


def control_assignment(user_ids: Iterable[Any], share: float, seed: int = 0) -> np.ndarray:
    """Boolean per user: in the control group when ``sha256(f"{seed}:{user_id}") / 2**64 < share``.

    (The first 8 bytes of the digest, big-endian, as the fraction's numerator.) A hash rather than a
    random draw, so a user stays in the same group run after run, whatever else is in the batch,
    and another system can recompute it; the seed lets a new experiment reshuffle everyone.
    """
    if not 0 <= share <= 1:
        raise ValueError("control share must be in [0, 1]")
    ids = [str(u) for u in user_ids]
    if share == 0 or not ids:
        return np.zeros(len(ids), dtype=bool)
    fractions = _hash64(f"{seed}:{u}" for u in ids).astype(np.float64) / 2.0**64
    return fractions < share


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scramble of uint64 (wrap-around arithmetic intended)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _shuffle_by_keys(
    user_keys: np.ndarray, columns: np.ndarray, n: int, blocked: sp.csr_matrix | None, chunk_size: int
) -> np.ndarray:
    """Exact per-user shuffle: key ``splitmix64(user_key XOR splitmix64(position))``, ``n`` smallest.

    Costs one hash per (user, allowed item); used for small catalogues and for the rare users
    whose sampled draws were mostly excluded.
    """
    out = np.full((user_keys.size, n), -1, dtype=np.int64)
    with np.errstate(over="ignore"):
        position_keys = _splitmix64(np.arange(columns.size, dtype=np.uint64))
    for start in range(0, user_keys.size, chunk_size):
        stop = min(start + chunk_size, user_keys.size)
        with np.errstate(over="ignore"):
            keys = _splitmix64(user_keys[start:stop, None] ^ position_keys[None, :])
        # The 53 high bits are exact in float64; the smallest key first = the largest negated score.
        scores = -(keys >> np.uint64(11)).astype(np.float64)
        ids, _ = top_n(scores, n, None if blocked is None else blocked[start:stop])
        out[start:stop] = np.where(ids >= 0, columns[np.maximum(ids, 0)], -1)
    return out


def random_items(
    user_ids: Collection[str],
    item_ids: np.ndarray,
    n: int,
    *,
    seed: int,
    exclude: sp.csr_matrix | None = None,
    allowed: np.ndarray | None = None,
    chunk_size: int = 2048,
) -> np.ndarray:
    """``n`` distinct random allowed item columns per user, seeded per user (``-1`` padding).

    Every user has a random stream ``splitmix64(h(seed, user) XOR splitmix64(j))``, j = 0, 1, …;
    draw j picks the allowed item at position ``stream_j mod (number allowed)``. The first ``n``
    draws that are neither repeats nor excluded are the list: uniform draws without replacement,
    that depend only on the seed, the user id and the allowed items (not on the other users
    served). ``4n + 16`` draws are made at once, vectorised; a user for whom they do not yield
    ``n`` items (a tiny catalogue, or most of it excluded) gets an exact shuffle of all allowed
    items instead.
    """
    users = list(user_ids)
    out = np.full((len(users), n), -1, dtype=np.int64)
    columns = np.arange(item_ids.size) if allowed is None else np.flatnonzero(allowed)
    if not users or columns.size == 0:
        return out
    user_keys = _hash64(f"{seed}:control-items:{u}" for u in users)
    blocked = None if exclude is None else sp.csr_matrix(exclude)[:, columns].tocsr()
    draws = 4 * n + 16
    if columns.size <= draws:
        return _shuffle_by_keys(user_keys, columns, n, blocked, chunk_size)

    with np.errstate(over="ignore"):
        stream = _splitmix64(user_keys[:, None] ^ _splitmix64(np.arange(draws, dtype=np.uint64))[None, :])
    picks = (stream % np.uint64(columns.size)).astype(np.int64)  # positions among the allowed
    count = len(users)
    rows = np.repeat(np.arange(count), draws).reshape(count, draws)
    # Repeats: after a stable sort of each row, an entry equal to its left neighbour is a repeat
    # of an earlier draw.
    order = np.argsort(picks, axis=1, kind="stable")
    ordered = np.take_along_axis(picks, order, axis=1)
    repeat = np.zeros_like(picks, dtype=bool)
    repeat[rows[:, 1:], order[:, 1:]] = ordered[:, 1:] == ordered[:, :-1]
    usable = ~repeat
    if blocked is not None and blocked.nnz:
        blocked.sort_indices()
        block_rows = np.repeat(np.arange(count), np.diff(blocked.indptr))
        taken = block_rows.astype(np.int64) * columns.size + blocked.indices
        usable &= ~np.isin(rows * columns.size + picks, taken)
    # First n usable draws per row, in draw order.
    first = np.argsort(~usable, axis=1, kind="stable")[:, :n]
    chosen = np.take_along_axis(picks, first, axis=1)
    ok = np.take_along_axis(usable, first, axis=1)
    out[:, : chosen.shape[1]] = np.where(ok, columns[chosen], -1)
    short = np.flatnonzero(~ok.all(axis=1))
    if short.size:
        out[short] = _shuffle_by_keys(
            user_keys[short], columns, n, None if blocked is None else blocked[short], chunk_size
        )
    return out


def _model_of(selection_or_model: Any) -> Recommender:
    # A Selection carries the fitted model in ``.model`` (a Recommender's own ``.model``, e.g.
    # ALS's implicit object, must not be mistaken for it).
    model = selection_or_model if isinstance(selection_or_model, Recommender) else getattr(selection_or_model, "model", None)
    if not isinstance(model, Recommender) or model.data is None:
        raise TypeError("expected a fitted Recommender or a Selection")
    return model


def _allowed_mask(
    data: InteractionMatrix,
    *,
    candidate_items: Collection[Any] | None,
    exclude_items: Collection[Any],
    in_stock_only: bool,
    items: pd.DataFrame | None,
) -> np.ndarray:
    allowed = np.ones(data.n_items, dtype=bool)
    if candidate_items is not None:
        allowed[:] = False
        columns = data.item_columns(candidate_items)
        allowed[columns[columns >= 0]] = True  # items the model has never heard of are dropped
    if exclude_items:
        columns = data.item_columns(exclude_items)
        allowed[columns[columns >= 0]] = False
    if in_stock_only:
        if items is None or "is_in_stock" not in items.columns:
            raise ValueError("in_stock_only needs an items frame with is_in_stock")
        in_stock = items.loc[items["is_in_stock"].fillna(False).astype(bool), "item_id"].astype(str)
        # Items missing from the catalogue have an unknown stock: not shown.
        allowed &= pd.Index(data.item_ids.astype(str)).isin(set(in_stock))
    return allowed


def _converted_rows(data: InteractionMatrix, rows: np.ndarray, exclude_converted: bool) -> sp.csr_matrix:
    if not exclude_converted or rows.size == 0:
        return sp.csr_matrix((rows.size, data.n_items), dtype=np.float32)
    known = rows >= 0
    block = data.converted[np.where(known, rows, 0)]
    if not known.all():
        block = sp.csr_matrix(sp.diags(known.astype(np.float32)) @ block)
        block.eliminate_zeros()
    return block


def _rows_frame(
    users: np.ndarray,
    positions: np.ndarray,
    item_ids: np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray | None,
    *,
    is_control: bool,
    source: str,
) -> pd.DataFrame:
    """Long rows (one per user and rank) from ``(users, n)`` id and score arrays; -1 ids dropped."""
    valid = ids >= 0
    user_index, rank_index = np.nonzero(valid)  # padding is always at the end of a row
    chosen = ids[valid]
    return pd.DataFrame(
        {
            "user_id": users[user_index],
            "rank": (rank_index + 1).astype(np.int64),
            "item_id": item_ids[chosen],
            "score": np.full(chosen.size, np.nan) if scores is None else scores[valid].astype(np.float64),
            "is_control": np.full(chosen.size, is_control, dtype=bool),
            "source": np.full(chosen.size, source, dtype=object),
            "_position": positions[user_index],
        }
    )


def recommend_for_users(
    selection_or_model: Any,
    users: Iterable[Any],
    *,
    n: int = 10,
    candidate_items: Collection[Any] | None = None,
    exclude_items: Collection[Any] = (),
    exclude_converted: bool = True,
    in_stock_only: bool = False,
    items: pd.DataFrame | None = None,
    control_share: float = 0.0,
    seed: int = 0,
    fallback: str = "trending",
    min_history: int = 1,
    chunk_size: int = 2048,
) -> pd.DataFrame:
    """Top ``n`` items for every user, with fallback and control groups (see the module docstring).

    Parameters
    ----------
    selection_or_model
        A :class:`~ml.recommend.selection.Selection` or a fitted recommender.
    users
        User ids (duplicates are served once; output follows the first occurrence order).
    n
        Items per user; fewer when fewer allowed items remain.
    candidate_items
        Items that may be recommended (``None``: every item the model knows). Unknown ids are ignored.
    exclude_items
        Items never recommended to anyone.
    exclude_converted
        Do not recommend items a user already had the outcome event on (before the model's
        reference time).
    in_stock_only
        Recommend only items whose ``is_in_stock`` is true in ``items`` (or, when ``items`` is
        ``None``, in the catalogue the model was fitted with). Items missing there are not shown.
    items
        A fresher catalogue for the stock check.
    control_share
        Share of users in the random control group (:func:`control_assignment`).
    seed
        Seeds the control assignment and the control lists.
    fallback
        ``"trending"`` or ``"popular"``: what users with too little history get.
    min_history
        Distinct items a user must have interacted with to get the model's list.

    Returns
    -------
    DataFrame with ``user_id`` (str), ``rank`` (int, 1..n), ``item_id`` (str), ``score`` (float; NaN
    for control rows), ``is_control`` (bool) and ``source`` (the model's name, ``fallback_trending``,
    ``fallback_popular`` or ``control_random``), ordered by user then rank.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {sorted(FALLBACKS)}, got {fallback!r}")
    if n < 1:
        raise ValueError("n must be at least 1")
    model = _model_of(selection_or_model)
    data = model.data
    catalogue = items if items is not None else model.items
    user_ids = np.asarray(pd.unique(pd.Series([str(u) for u in users], dtype=object)), dtype=object)
    position = np.arange(user_ids.size)

    allowed = _allowed_mask(
        data,
        candidate_items=candidate_items,
        exclude_items=exclude_items,
        in_stock_only=in_stock_only,
        items=catalogue,
    )
    rows = data.user_rows(user_ids)
    history = np.where(rows >= 0, data.history_sizes()[np.maximum(rows, 0)], 0)
    control = control_assignment(user_ids, control_share, seed)
    personal = ~control & (rows >= 0) & (history >= max(min_history, 1))
    newcomer = ~control & ~personal

    def exclusions(group: np.ndarray) -> sp.csr_matrix:
        return _converted_rows(data, rows[group], exclude_converted)

    frames = []
    if personal.any():
        ids, scores = model.recommend(
            rows[personal], n=n, exclude=exclusions(personal), allowed=allowed, chunk_size=chunk_size
        )
        frames.append(
            _rows_frame(user_ids[personal], position[personal], data.item_ids, ids, scores,
                        is_control=False, source=model.name)
        )
    if newcomer.any():
        cls, source = FALLBACKS[fallback]
        backup = cls().fit(data, model.items, seed=seed)
        ids, scores = backup.recommend(
            rows[newcomer], n=n, exclude=exclusions(newcomer), allowed=allowed, chunk_size=chunk_size
        )
        frames.append(
            _rows_frame(user_ids[newcomer], position[newcomer], data.item_ids, ids, scores,
                        is_control=False, source=source)
        )
    if control.any():
        ids = random_items(
            user_ids[control], data.item_ids, n, seed=seed, exclude=exclusions(control), allowed=allowed,
            chunk_size=chunk_size,
        )
        frames.append(
            _rows_frame(user_ids[control], position[control], data.item_ids, ids, None,
                        is_control=True, source=CONTROL_SOURCE)
        )
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in _EMPTY_DTYPES.items()})
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(["_position", "rank"], kind="mergesort").drop(columns="_position").reset_index(drop=True)
    out["user_id"] = out["user_id"].astype(str)
    out["item_id"] = out["item_id"].astype(str)
    out["source"] = out["source"].astype(str)
    return out[list(OUTPUT_COLUMNS)]
