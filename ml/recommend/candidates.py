"""Candidate recommenders behind one interface: ``fit(data, items, seed)`` / ``recommend(rows, n, …)``.

Every model is fitted on an :class:`~ml.recommend.data.InteractionMatrix` (users × items, summed
weights) and answers for *rows* of that matrix::

    model = make_recommender("ease", l2=500).fit(data, items, seed=0)
    ids, scores = model.recommend(rows, n=10, exclude=converted_rows, allowed=in_stock_mask)

``ids`` is an ``(len(rows), n)`` int64 array of item columns, best first, padded with ``-1`` when
fewer than ``n`` items are allowed; ``scores`` is float64 with ``NaN`` in the padding. ``exclude``
is a CSR matrix with one row per requested user (non-zero = never recommend this item to this
user); ``allowed`` a boolean mask over all items (``False`` = never recommend it to anyone).
Exclusions are applied *before* the top-n cut, so a user always gets ``n`` items when ``n``
allowed ones remain.

The models, cheapest first, each a baseline the fancier ones have to beat (Dacrema et al. 2019):

========================  ===================================================================
``popularity``            outcome events per item in the last ``window_days`` (30) before the
                          reference time; same list for everyone (what "most popular" means)
``trending``              growth of outcome counts in a ``window_days`` (7) window ending
                          ``offset_days`` (2) before the reference time, against the window
                          before it (Amplitude's "top trending")
``item_cosine``           item-to-item neighbours, ``implicit.nearest_neighbours.CosineRecommender``
``item_bm25``             the same with BM25 weighting (damps heavy users and blockbuster items)
``ease``                  EASE (Steck 2019): closed-form item-item regression on the top
                          ``max_items`` (5,000) most interacted items
``als``                   ``implicit.als.AlternatingLeastSquares`` (implicit-feedback matrix
                          factorisation, Hu, Koren & Volinsky 2008)
``bpr``                   ``implicit.bpr.BayesianPersonalizedRanking``
``content``               TF-IDF of item name + category + description; a user's profile is the
                          weighted mean of the vectors of the items they interacted with
``hybrid``                EASE blended with the content model, so never-bought items can surface
========================  ===================================================================

Threads: implicit warns, and is much slower, when OpenBLAS runs its own thread pool. A library must
not set environment variables behind its caller's back, so callers set ``OPENBLAS_NUM_THREADS=1``
(the Makefile exports it); in addition every implicit and BLAS-heavy call here runs inside
``threadpoolctl.threadpool_limits(1, "blas")``, which has the same effect at run time. implicit's
own native loops use ``num_threads`` threads, default 1 (0 = all cores): on a shared 2-core
machine two threads made a small ALS fit 20× *slower* (spin-waiting for a busy core) and a
20k-user fit no faster, and BPR's lock-free SGD is only reproducible for a seed on one thread.
ALS and the item neighbours give the same result for any thread count; raise it on a dedicated
machine.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ml.recommend.data import InteractionMatrix

# Rows of dense scores computed at once: 2,048 users × 5,000 items × 4 bytes = 40 MB per chunk.
DEFAULT_CHUNK_SIZE = 2048
# EASE inverts an items × items matrix, O(items³): 2,000 items took ~0.6 s here, 5,000 items 7-17 s
# on one (shared) BLAS thread and 200 MB of float64; 20,000 would take 64× longer and 3 GB. Items
# outside the cap are never recommended by EASE.
EASE_MAX_ITEMS = 5000
# Added to scores in proportion to an item's popularity rank (0 … 1e-6), so that the many exact
# ties of sparse models (every item no neighbour points to scores 0) are broken towards popular
# items rather than by column order. It can only reorder scores closer than 1e-6.
TIE_BREAK = 1e-6
# implicit marks filtered items with -FLT_MAX; anything below this is "no item".
_FILTERED = -1e30


@contextmanager
def _single_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def popularity_rank(data: InteractionMatrix) -> np.ndarray:
    """Per item, its popularity rank scaled to [0, 1) (most popular → highest), for tie-breaks.

    Order: outcome events, then total weight, then the smaller column first.
    """
    outcomes = data.outcome_counts()
    weight = data.item_weight()
    order = np.lexsort((-np.arange(data.n_items), weight, outcomes))  # ascending popularity
    rank = np.empty(data.n_items, dtype=np.float64)
    rank[order] = np.arange(data.n_items) / max(data.n_items, 1)
    return rank


def top_n(scores: np.ndarray, n: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` columns per row of a dense score block; ``exclude`` non-zeros never chosen.

    ``scores`` is modified in place (excluded cells become -inf). Returns ``(ids, values)`` of
    shape ``(rows, n)``, best first, ``-1`` / ``NaN`` where fewer than ``n`` finite scores exist.
    Ties: the smaller column first. Deterministic.

    How: ``ndarray.partition`` finds each row's n-th best *value* (on a copy, values only), the
    cells at or above it are gathered with one comparison, and only those few are sorted. About
    four times faster than ``argpartition``, which writes an int64 index for every cell.
    """
    rows, columns = scores.shape
    ids = np.full((rows, n), -1, dtype=np.int64)
    values = np.full((rows, n), np.nan, dtype=np.float64)
    if rows == 0 or columns == 0 or n == 0:
        return ids, values
    if exclude is not None and exclude.nnz:
        r, c = exclude.nonzero()
        scores[r, c] = -np.inf
    width = min(n, columns)
    if width < columns:
        copy = scores.copy()
        copy.partition(columns - width, axis=1)
        threshold = copy[:, columns - width]
        del copy
        chosen = (scores >= threshold[:, None]) & (scores > -np.inf)
    else:
        chosen = scores > -np.inf
    r, c = np.nonzero(chosen)
    v = scores[r, c]
    order = np.lexsort((c, -v, r))  # by row, then best score, then smaller column
    r, c, v = r[order], c[order], v[order]
    position = np.arange(r.size) - np.searchsorted(r, r, side="left")
    keep = position < width  # ties at the threshold can gather more than n cells in a row
    ids[r[keep], position[keep]] = c[keep]
    values[r[keep], position[keep]] = v[keep]
    return ids, values


def _as_exclude(exclude: Any, rows: int, items: int) -> sp.csr_matrix | None:
    if exclude is None:
        return None
    matrix = sp.csr_matrix(exclude, dtype=np.float32)
    if matrix.shape != (rows, items):
        raise ValueError(f"exclude must be {rows} × {items} (one row per user), got {matrix.shape}")
    matrix.eliminate_zeros()
    return matrix


def _allowed_columns(allowed: Any, items: int) -> np.ndarray | None:
    if allowed is None:
        return None
    mask = np.asarray(allowed, dtype=bool).ravel()
    if mask.size != items:
        raise ValueError(f"allowed must be a mask over {items} items, got {mask.size}")
    return np.flatnonzero(mask)


class Recommender:
    """Base class: parameters, fitting bookkeeping and the chunked dense top-n path.

    Subclasses set ``name``, implement ``_fit`` and either ``_score`` (a dense block of scores for
    some rows and columns, the default recommend path) or their own ``recommend``.
    ``personalised`` is False for the models that give everyone the same list.
    """

    name: ClassVar[str] = "base"
    personalised: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise TypeError(f"{self.name} has no parameters {unknown}; known: {sorted(self.defaults)}")
        self.given: dict[str, Any] = dict(params)
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.data: InteractionMatrix | None = None
        self.items: pd.DataFrame | None = None
        self.seed: int | None = None

    # ---- description ----------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The name and the parameters given explicitly, e.g. ``ease(λ=100)`` (EASE's l2 is λ).

        Thread counts are left out: they do not change what the model is.
        """
        shown = {k: v for k, v in self.given.items() if k != "num_threads"}
        if not shown:
            return self.name
        parts = [f"{'λ' if k == 'l2' else k}={_number(v)}" for k, v in shown.items()]
        return f"{self.name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}{'' if self.data is not None else ' (unfitted)'}>"

    # ---- fitting ----------------------------------------------------------------------------
    def fit(self, data: InteractionMatrix, items: pd.DataFrame | None = None, seed: int = 0) -> Recommender:
        """Fit on ``data`` (and the catalogue ``items`` for models that read it); returns self."""
        self.data = data
        self.items = items
        self.seed = int(seed)
        self._fit(data, items, int(seed))
        return self

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None, seed: int) -> None:
        raise NotImplementedError

    def _require_fitted(self) -> InteractionMatrix:
        if self.data is None:
            raise RuntimeError(f"{self.label} is not fitted")
        return self.data

    # ---- recommending -----------------------------------------------------------------------
    def _request(self, user_rows: Any, n: int, exclude: Any, allowed: Any) -> tuple[Any, ...]:
        """Checked rows, the exclusion matrix, the allowed columns and empty (padded) outputs."""
        data = self._require_fitted()
        rows = np.asarray(user_rows, dtype=np.int64).ravel()
        if rows.size and (rows.min() < 0 or rows.max() >= data.n_users):
            raise IndexError(f"user rows must be in 0..{data.n_users - 1}")
        excluded = _as_exclude(exclude, rows.size, data.n_items)
        columns = _allowed_columns(allowed, data.n_items)
        ids = np.full((rows.size, n), -1, dtype=np.int64)
        values = np.full((rows.size, n), np.nan, dtype=np.float64)
        return data, rows, excluded, columns, ids, values

    def recommend(
        self,
        user_rows: Any,
        n: int = 10,
        exclude: Any = None,
        allowed: Any = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` item columns and scores for each row (see the module docstring)."""
        data, rows, excluded, columns, ids, values = self._request(user_rows, n, exclude, allowed)
        if columns is not None and excluded is not None:
            excluded = excluded[:, columns]
        if columns is not None and columns.size == 0:
            return ids, values
        context = self._prepare(columns)
        for start in range(0, rows.size, chunk_size):
            stop = min(start + chunk_size, rows.size)
            block = self._score(rows[start:stop], columns, context)
            block_ids, block_values = top_n(block, n, None if excluded is None else excluded[start:stop])
            if columns is not None:
                block_ids = np.where(block_ids >= 0, columns[np.maximum(block_ids, 0)], -1)
            ids[start:stop], values[start:stop] = block_ids, block_values
        return ids, values

    def _prepare(self, columns: np.ndarray | None) -> Any:
        """Per-call state shared by all chunks (e.g. the allowed columns of a similarity matrix)."""
        return None

    def _score(self, rows: np.ndarray, columns: np.ndarray | None, context: Any) -> np.ndarray:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Non-personalised


class GlobalRanking(Recommender):
    """One ranking of all items for everyone; each user gets it minus their exclusions.

    Subclasses compute ``self.item_scores`` (float per item) and ``self.order`` (every item
    column, best first). Recommending takes the first ``n + most exclusions of any user`` allowed
    items of ``order`` and keeps, per user, the first ``n`` not excluded: no per-user scoring, so
    100,000 users take milliseconds.
    """

    personalised = False

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.item_scores: np.ndarray | None = None
        self.order: np.ndarray | None = None

    def recommend(
        self,
        user_rows: Any,
        n: int = 10,
        exclude: Any = None,
        allowed: Any = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` of the global order per user. ``user_rows`` only sets the count (rows may be -1)."""
        data = self._require_fitted()
        count = np.asarray(user_rows).ravel().size
        excluded = _as_exclude(exclude, count, data.n_items)
        order = self.order
        if allowed is not None:
            mask = np.asarray(allowed, dtype=bool).ravel()
            if mask.size != data.n_items:
                raise ValueError(f"allowed must be a mask over {data.n_items} items, got {mask.size}")
            order = order[mask[order]]
        ids = np.full((count, n), -1, dtype=np.int64)
        values = np.full((count, n), np.nan, dtype=np.float64)
        for start in range(0, count, chunk_size):
            stop = min(start + chunk_size, count)
            block = None if excluded is None else excluded[start:stop]
            extra = 0 if block is None else int(np.diff(block.indptr).max(initial=0))
            head = order[: n + extra]
            if block is None:
                taken = np.broadcast_to(head[:n], (stop - start, min(n, head.size)))
            else:
                hidden = block[:, head].toarray() != 0
                # Stable sort on "hidden" keeps the global order among the visible items.
                position = np.argsort(hidden, axis=1, kind="stable")[:, :n]
                taken = np.where(np.take_along_axis(hidden, position, axis=1), -1, head[position])
            width = taken.shape[1]
            ids[start:stop, :width] = taken
            values[start:stop, :width] = np.where(taken >= 0, self.item_scores[np.maximum(taken, 0)], np.nan)
        return ids, values


class Popularity(GlobalRanking):
    """Most converted-on items in the last ``window_days`` before the reference time.

    Score = outcome events in the window. Ties (and items with no outcome in the window, which
    still fill the end of the list) go by all-time outcome events, then total interaction weight.
    The baseline every personalised model is compared with.
    """

    name = "popularity"
    defaults = {"window_days": 30}

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None, seed: int) -> None:
        end = data.reference_at
        window = data.outcome_counts(end - pd.Timedelta(days=self.params["window_days"]), end)
        self.item_scores = window
        self.order = np.lexsort((np.arange(data.n_items), -data.item_weight(), -data.outcome_counts(), -window))


class Trending(GlobalRanking):
    """Items whose outcome counts grew the most: Amplitude's "top trending".

    The current window is ``[ref - offset - window, ref - offset)`` and the previous window the
    ``window_days`` before it; the ``offset_days`` skip the freshest days, whose counts are still
    incomplete (late events) and noisy. Score = ``(current + s) / (previous + s)`` with
    ``s = smoothing`` (5), a shrinkage towards "no growth" so that an item going from 0 to 1 sale
    (ratio 1.2) does not beat one going from 20 to 60 (2.6). Only items with at least one outcome
    in the current window are trending; the rest follow in popularity order (outcomes of the last
    30 days, then of all time), so the list is always full.
    """

    name = "trending"
    defaults = {"window_days": 7, "offset_days": 2, "smoothing": 5.0}

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None, seed: int) -> None:
        window = pd.Timedelta(days=self.params["window_days"])
        end = data.reference_at - pd.Timedelta(days=self.params["offset_days"])
        current = data.outcome_counts(end - window, end)
        previous = data.outcome_counts(end - 2 * window, end - window)
        s = float(self.params["smoothing"])
        growth = (current + s) / (previous + s)
        growth[current == 0] = 0.0
        self.item_scores = growth
        recent = data.outcome_counts(data.reference_at - pd.Timedelta(days=30), data.reference_at)
        self.order = np.lexsort(
            (np.arange(data.n_items), -data.item_weight(), -data.outcome_counts(), -recent, -current, -growth)
        )


# ---------------------------------------------------------------------------------------------
# Item-to-item neighbours (implicit)


class ItemNeighbours(Recommender):
    """Item-kNN: score(u, i) = Σ_j x_uj · sim(j, i) over the ``K`` nearest neighbours of each item.

    The similarity matrix comes from implicit's ``CosineRecommender`` / ``BM25Recommender``
    (``fit`` on the user × item CSR). Scoring multiplies a chunk of user rows by the similarity
    matrix restricted to the allowed columns — the same sum implicit's own ``recommend`` computes,
    but batched with scipy rather than looped per user in Python, and with the per-user exclusions
    applied before the top-n cut. An item the user interacted with is its own neighbour, so viewed
    (not bought) items rank high: in shops they are the likeliest purchases.
    """

    name = "item_cosine"
    defaults: ClassVar[dict[str, Any]] = {"K": 100, "num_threads": 1}
    kind: ClassVar[str] = "cosine"

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None, seed: int) -> None:
        from implicit import nearest_neighbours as nn

        params = dict(self.params)
        threads = params.pop("num_threads")
        with _single_blas_thread(), warnings.catch_warnings():
            # implicit hands its own normalised COO matrix to the kNN builder and then warns
            # about it; nothing the caller can act on.
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            if self.kind == "bm25":
                model = nn.BM25Recommender(K=params["K"], K1=params["K1"], B=params["B"], num_threads=threads)
            else:
                model = nn.CosineRecommender(K=params["K"], num_threads=threads)
            model.fit(data.matrix, show_progress=False)
        self.similarity = sp.csr_matrix(model.similarity, dtype=np.float32)
        self._tie = (TIE_BREAK * popularity_rank(data)).astype(np.float32)

    def _prepare(self, columns: np.ndarray | None) -> Any:
        if columns is None:
            return self.similarity, self._tie
        return self.similarity[:, columns].tocsr(), self._tie[columns]

    def _score(self, rows: np.ndarray, columns: np.ndarray | None, context: Any) -> np.ndarray:
        similarity, tie = context
        block = (self.data.matrix[rows] @ similarity).toarray()
        block += tie
        return block


class ItemNeighboursBM25(ItemNeighbours):
    """Item-kNN on BM25-weighted vectors (``K1``, ``B`` as in text retrieval)."""

    name = "item_bm25"
    defaults = {"K": 100, "K1": 1.2, "B": 0.75, "num_threads": 1}
    kind = "bm25"


# ---------------------------------------------------------------------------------------------
# EASE


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, 2019): ``B = I - P / diag(P)``, ``P = (XᵀX + λI)⁻¹``.

    A closed-form item-item regression with a zero diagonal (an item may not predict itself),
    strong on e-commerce data and with one hyper-parameter, ``l2`` (λ). Only the ``max_items``
    (default 5,000) items with the most users are modelled, because the inverse costs O(items³);
    the others are never recommended by EASE (the hybrid lets the content model reach them).
    Scores are ``X_u B``: a sparse user chunk times the dense ``B`` columns that are allowed.
    """

    name = "ease"
    defaults = {"l2": 500.0, "max_items": EASE_MAX_ITEMS}

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None, seed: int) -> None:
        users_per_item = np.diff(data.matrix.tocsc().indptr)
        cap = int(self.params["max_items"])
        # Most users first; ties by column, so the kept set does not depend on anything random.
        kept = np.sort(np.lexsort((np.arange(data.n_items), -users_per_item))[:cap])
        kept = kept[users_per_item[kept] > 0]  # an item nobody touched has nothing to learn from
        self.kept = kept
        self.capped = bool(data.n_items > cap)
        X = data.matrix[:, kept].tocsr()
        gram = (X.T @ X).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += float(self.params["l2"])
        # A general LAPACK inverse: a Cholesky one (potrf + potri) measured no faster here.
        P = np.linalg.inv(gram) if kept.size else gram
        B = -P / np.diag(P)  # column j divided by P_jj
        B[np.diag_indices_from(B)] = 0.0
        self.B = B.astype(np.float32)
        self.X = X
        position = np.full(data.n_items, -1, dtype=np.int64)
        position[kept] = np.arange(kept.size)
        self.position = position

    def _prepare(self, columns: np.ndarray | None) -> Any:
        wanted = np.arange(self.data.n_items) if columns is None else columns
        where = self.position[wanted]
        modelled = np.flatnonzero(where >= 0)
        return wanted.size, modelled, np.ascontiguousarray(self.B[:, where[modelled]])

    def _score(self, rows: np.ndarray, columns: np.ndarray | None, context: Any) -> np.ndarray:
        width, modelled, B = context
        scores = np.asarray(self.X[rows] @ B, dtype=np.float32)  # sparse × dense: no BLAS involved
        if modelled.size == width:
            return scores
        block = np.full((rows.size, width), -np.inf, dtype=np.float32)
        block[:, modelled] = scores
        return block


# ---------------------------------------------------------------------------------------------
# Matrix factorisation (implicit)


class _MatrixFactorisation(Recommender):
    """Shared recommend path of ALS and BPR: implicit's batch ``recommend``.

    The per-user exclusions are handed to implicit as its ``user_items`` with
    ``filter_already_liked_items=True`` (for a factorisation model ``user_items`` is only used
    to filter), and the allowed columns as ``items``; implicit's native top-k then never returns
    them. Items it had to filter come back with score -FLT_MAX and are turned into padding.
    """

    def _make(self, seed: int) -> Any:
        raise NotImplementedError

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None, seed: int) -> None:
        # Load implicit's native code first: a BLAS library loaded inside the limit would escape it
        # (and implicit would warn about its thread pool).
        import implicit.als  # noqa: F401
        import implicit.bpr  # noqa: F401

        with _single_blas_thread():
            model = self._make(seed)
            model.fit(data.matrix, show_progress=False)
        self.model = model

    def recommend(
        self,
        user_rows: Any,
        n: int = 10,
        exclude: Any = None,
        allowed: Any = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> tuple[np.ndarray, np.ndarray]:
        data, rows, excluded, columns, ids, values = self._request(user_rows, n, exclude, allowed)
        if rows.size == 0 or (columns is not None and columns.size == 0):
            return ids, values
        if excluded is None:
            excluded = sp.csr_matrix((rows.size, data.n_items), dtype=np.float32)
        # implicit computes everything in one native call; chunks only bound the memory of
        # the returned arrays for very large user lists.
        step = max(chunk_size, 65536)
        with _single_blas_thread():
            for start in range(0, rows.size, step):
                stop = min(start + step, rows.size)
                got_ids, got_scores = self.model.recommend(
                    rows[start:stop],
                    excluded[start:stop],
                    N=n,
                    filter_already_liked_items=True,
                    items=columns,
                )
                got_ids = np.atleast_2d(got_ids).astype(np.int64)
                got_scores = np.atleast_2d(got_scores).astype(np.float64)
                valid = got_scores > _FILTERED
                width = got_ids.shape[1]
                ids[start:stop, :width] = np.where(valid, got_ids, -1)
                values[start:stop, :width] = np.where(valid, got_scores, np.nan)
        return ids, values


class ALS(_MatrixFactorisation):
    """``implicit.als.AlternatingLeastSquares`` on the summed weights (confidence = ``alpha`` × weight)."""

    name = "als"
    defaults = {"factors": 64, "regularization": 0.05, "alpha": 1.0, "iterations": 15, "num_threads": 1}

    def _make(self, seed: int) -> Any:
        from implicit.als import AlternatingLeastSquares

        p = self.params
        return AlternatingLeastSquares(
            factors=int(p["factors"]),
            regularization=float(p["regularization"]),
            alpha=float(p["alpha"]),
            iterations=int(p["iterations"]),
            num_threads=int(p["num_threads"]),
            random_state=seed,
            use_gpu=False,
        )


class BPR(_MatrixFactorisation):
    """``implicit.bpr.BayesianPersonalizedRanking`` (pairwise ranking loss; any weight > 0 is a positive).

    Keep ``num_threads`` at 1 when results must be reproducible: the SGD is lock-free across
    threads, so only one thread gives the same factors for the same seed.
    """

    name = "bpr"
    defaults = {
        "factors": 64,
        "learning_rate": 0.01,
        "regularization": 0.01,
        "iterations": 100,
        "num_threads": 1,
    }

    def _make(self, seed: int) -> Any:
        from implicit.bpr import BayesianPersonalizedRanking

        p = self.params
        return BayesianPersonalizedRanking(
            factors=int(p["factors"]),
            learning_rate=float(p["learning_rate"]),
            regularization=float(p["regularization"]),
            iterations=int(p["iterations"]),
            num_threads=int(p["num_threads"]),
            random_state=seed,
            use_gpu=False,
        )


# ---------------------------------------------------------------------------------------------
# Content


def item_texts(item_ids: np.ndarray, items: pd.DataFrame | None) -> list[str]:
    """``item_name category description`` per item id (empty for items missing from ``items``)."""
    if items is None or not len(items):
        return [""] * len(item_ids)
    fields = [c for c in ("item_name", "category", "description") if c in items.columns]
    frame = items.drop_duplicates("item_id", keep="last").copy()
    frame["item_id"] = frame["item_id"].astype(str)
    text = pd.Series("", index=frame.index, dtype=object)
    for field in fields:
        text = text + " " + frame[field].fillna("").astype(str)
    lookup = pd.Series(text.str.strip().to_numpy(), index=frame["item_id"].to_numpy())
    return lookup.reindex(pd.Index(item_ids.astype(str))).fillna("").tolist()


class Content(Recommender):
    """Cosine between a user's taste profile and every item, in TF-IDF space.

    Item vectors: ``TfidfVectorizer`` (unigrams and bigrams, sublinear tf, l2-normalised) on
    ``item_name``, ``category`` and ``description``. A user's profile is the weighted mean of the
    vectors of the items they interacted with (weights from the matrix), so one view is enough to
    find similar items, and an item nobody has bought yet is as reachable as a bestseller: the
    model the collaborative ones cannot replace for new items. Items without text score 0; ties
    are broken towards popular items.
    """

    name = "content"
    defaults = {"max_features": 50000, "ngram_max": 2, "min_df": 1}

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None, seed: int) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = item_texts(data.item_ids, items)
        if not any(texts):
            raise ValueError("the content model needs items with item_name, category or description")
        vectorizer = TfidfVectorizer(
            max_features=int(self.params["max_features"]),
            ngram_range=(1, int(self.params["ngram_max"])),
            min_df=int(self.params["min_df"]),
            sublinear_tf=True,
            dtype=np.float32,
        )
        self.vectors = sp.csr_matrix(vectorizer.fit_transform(texts), dtype=np.float32)
        self.vocabulary_size = len(vectorizer.vocabulary_)
        self._tie = (TIE_BREAK * popularity_rank(data)).astype(np.float32)

    def _prepare(self, columns: np.ndarray | None) -> Any:
        vectors = self.vectors if columns is None else self.vectors[columns]
        tie = self._tie if columns is None else self._tie[columns]
        return vectors.T.tocsr(), tie

    def profiles(self, rows: np.ndarray) -> sp.csr_matrix:
        """Unit-length taste profiles of the given user rows (zero rows for users without text)."""
        profile = sp.csr_matrix(self.data.matrix[rows] @ self.vectors)
        norms = np.sqrt(np.asarray(profile.multiply(profile).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ profile)

    def _score(self, rows: np.ndarray, columns: np.ndarray | None, context: Any) -> np.ndarray:
        vectors_t, tie = context
        block = (self.profiles(rows) @ vectors_t).toarray()
        block += tie
        return block


# ---------------------------------------------------------------------------------------------
# Hybrid


def _rescale_rows(block: np.ndarray) -> np.ndarray:
    """Each row min-max scaled to [0, 1] over its finite cells; non-finite cells become NaN."""
    finite = np.isfinite(block)
    low = np.where(finite, block, np.inf).min(axis=1, keepdims=True)
    high = np.where(finite, block, -np.inf).max(axis=1, keepdims=True)
    span = high - low
    span = np.where(np.isfinite(span) & (span > 0), span, 1.0)
    low = np.where(np.isfinite(low), low, 0.0)
    return np.where(finite, (block - low) / span, np.nan)


class Hybrid(Recommender):
    """EASE for the items with history, the content model for the rest, blended.

    Per user, both score rows are min-max scaled to [0, 1] over the allowed items; then

    - an item EASE models scores ``(1 - w) · ease01 + w · content01`` (``w = content_weight``, the
      share of the decision left to the text);
    - an item EASE cannot score (no interactions yet, or beyond the EASE cap) scores
      ``content01``: its missing collaborative score is imputed by the text, so a new item as close
      to the user's taste as their best EASE item competes with it on equal terms.

    It exists for coverage and cold start: new and never-bought items enter the lists, which
    neither EASE (it cannot see them) nor a plain blend (their EASE part is 0) achieves.
    """

    name = "hybrid"
    defaults = {"l2": 500.0, "max_items": EASE_MAX_ITEMS, "content_weight": 0.3}

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None, seed: int) -> None:
        self.ease = EASE(l2=self.params["l2"], max_items=self.params["max_items"]).fit(data, items, seed)
        self.content = Content().fit(data, items, seed)

    def _prepare(self, columns: np.ndarray | None) -> Any:
        return self.ease._prepare(columns), self.content._prepare(columns)

    def _score(self, rows: np.ndarray, columns: np.ndarray | None, context: Any) -> np.ndarray:
        ease_context, content_context = context
        ease = _rescale_rows(self.ease._score(rows, columns, ease_context))
        content = _rescale_rows(self.content._score(rows, columns, content_context))
        w = float(self.params["content_weight"])
        blended = np.where(np.isnan(ease), content, (1 - w) * ease + w * content)
        return np.nan_to_num(blended, nan=-np.inf).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Registry

MODELS: Mapping[str, type[Recommender]] = {
    cls.name: cls
    for cls in (Popularity, Trending, ItemNeighbours, ItemNeighboursBM25, EASE, ALS, BPR, Content, Hybrid)
}


def make_recommender(name: str, **params: Any) -> Recommender:
    """A fresh, unfitted model by name (see :data:`MODELS`), with parameters over its defaults."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown recommender {name!r}; known: {sorted(MODELS)}") from None
    return cls(**params)


def needs_item_text(name: str) -> bool:
    """Whether the model reads the catalogue's text (and so cannot run without ``items``)."""
    return name in ("content", "hybrid")


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
