"""Distances and class-level distances, with a proof that the top classes are exact.

All distances here are Euclidean distances (not squared), smaller = more alike.

Every distance the server reports comes from `exact_distances`: float64, from the stored float32
vectors, with a summation order fixed by the dimension alone. FAISS's float32 distances only choose
candidates: they drift with the batch a query shares (BLAS blocking, and |x|^2 + |y|^2 - 2<x, y>
cancels near zero: an item against itself can come out near 3e-4), so they are never reported and
never compared with a threshold. So a query gives the same bits alone or in any batch, and Verify,
Search, Identify and VerifyClass agree on the distance between the same two embeddings.

For nearest-exemplar and mean-of-k scoring, a search of depth D returns each probe's D nearest
items by float32 distance. Every item not returned is at float32 distance >= the deepest returned,
so its exact distance is >= `unseen_bound` (the deepest less FAISS's worst-case float32 error). A
class is scored exactly when all its exemplars were returned, or when its needed exemplars (1, or
min(mean_k, class size)) were returned at exact distances below that bound. Any other class can
score no better than if its unseen exemplars sat at the bound, which gives a lower bound. The top k
are exact once the k-th exact score is below every lower bound; otherwise the caller searches
deeper. So a class with 1,000 exemplars cannot crowd others out of the top k.

Prototype scoring is a distance to every class's unit-length mean: candidates by a float64 matrix
product, the top ones recomputed with `exact_distances` and proven against the rest (the matrix
product's error is bounded as FAISS's is). Exact whatever the index kind, and cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Worst-case error of a squared L2 distance computed in float32 (FAISS: SIMD differences, or norms
# plus a BLAS inner product, for an approximate index as for a flat one): at most about
# (2 * dim + 4) * u * (|x|^2 + |y|^2), u = 2^-24 (dim-term sums, two norms, the final additions).
# `unseen_bound` subtracts (2 * dim + 16) * u * (|x|^2 + |y|^2): that bound with room for the
# second-order terms. Without it an unseen item could sit just under the deepest returned one and
# the "proven" top k would depend on rounding, i.e. on the batch.
F32_EPS = 2.0 ** -24
F64_EPS = 2.0 ** -53


def exact_distances(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Euclidean distances, float64, between float32 rows that broadcast: (..., dim) and (..., dim).

    The difference of each pair is taken in float64 (the float32 inputs upcast exactly), squared and
    summed by a fixed halving tree that depends only on dim, elementwise: a pair's distance does not
    depend on the other rows, the batch size or the SIMD width. Identical vectors give exactly 0.0.
    """
    sq = np.subtract(vectors, queries, dtype=np.float64)
    if sq.ndim == 0 or sq.shape[-1] == 0:
        return np.zeros(sq.shape[:-1])
    sq *= sq
    width = sq.shape[-1]
    while width > 1:
        top = (width + 1) // 2
        sq[..., :width - top] += sq[..., top:width]
        width = top
    return np.sqrt(sq[..., 0])


def unseen_bound(deepest_sq: float, query_sq_norm: float, max_sq_norm: float, dim: int) -> float:
    """Lower bound (Euclidean, float) on the exact distance of any item a search did not return.

    deepest_sq: the deepest float32 squared distance the search returned; query_sq_norm and
    max_sq_norm: squared norms of the query and of the largest stored vector; dim: the dimension.
    """
    slack = (2 * dim + 16) * F32_EPS * (query_sq_norm + max_sq_norm)
    return float(np.sqrt(max(float(deepest_sq) - slack, 0.0)))


def sequential_sum(values: np.ndarray) -> float:
    """Sum in order, one addition at a time (the order `score_neighbors` sums a class in)."""
    total = 0.0
    for v in values:
        total += float(v)
    return total


@dataclass(frozen=True)
class ClassScores:
    """Ranked classes for one probe: slots int64 (k,), distances float64 (k,) ascending, nearest ids."""

    slots: np.ndarray
    distances: np.ndarray
    nearest_ids: tuple[tuple[int, ...], ...]


def score_neighbors(
    dist: np.ndarray,
    ids: np.ndarray,
    slots: np.ndarray,
    counts: np.ndarray,
    *,
    bound: float,
    per_class: int,
    k: int,
    n_classes: int,
    complete_view: bool,
) -> tuple[ClassScores, bool]:
    """Rank classes for one probe from its neighbour list.

    dist float64 (D,): exact Euclidean distances (`exact_distances`) of the returned items, any value
    where slots is -1; ids int64 (D,) (-1 past the end); slots int64 (D,) class slot per neighbour,
    -1 for padding or deleted items; counts int64 per slot; bound: a lower bound on the exact
    distance of every item not in the list (`unseen_bound`), unused with complete_view;
    per_class: exemplars averaged per class (1 = nearest exemplar, mean_k for mean-of-k);
    n_classes: live classes that could be ranked; complete_view: the list holds every candidate item.

    Returns (scores for up to k classes, ascending, ties by slot; whether they are proven the exact top k).
    """
    live = slots >= 0
    d = np.asarray(dist, dtype=np.float64)[live]
    s = slots[live]
    item = ids[live]
    if not len(s):
        empty = ClassScores(np.zeros(0, np.int64), np.zeros(0), ())
        return empty, complete_view or n_classes == 0
    order = np.lexsort((item, d, s))  # by class, then distance, then id
    s, d, item = s[order], d[order], item[order]
    uniq, start, seen = np.unique(s, return_index=True, return_counts=True)
    need = np.minimum(per_class, counts[uniq])
    used = np.minimum(seen, need)
    # Sums one rank at a time, in ascending order within each class: the same additions, in the same
    # order, as `class_distance` makes over the class's sorted distances, so the bits agree.
    sums = np.zeros(len(uniq))
    floor = np.zeros(len(uniq))  # sum of min(d, bound) over the used ranks (lower bounds)
    for r in range(int(used.max())):
        at = np.flatnonzero(used > r)
        vals = d[start[at] + r]
        sums[at] += vals
        floor[at] += np.minimum(vals, bound)
    if complete_view:
        complete = np.ones(len(uniq), dtype=bool)
    else:
        # Exact when every exemplar was returned, or when the need-th nearest returned is nearer than
        # anything unseen can be.
        kth = d[start + np.maximum(used, 1) - 1]
        complete = (seen >= counts[uniq]) | ((used >= need) & (kth < bound))
    # Equal to sums / need for a complete class; an exhausted approximate list may hold fewer.
    exact = sums / np.maximum(used, 1)

    cand = np.flatnonzero(complete)
    cand = cand[np.argsort(exact[cand], kind="stable")][:k]  # cand is by slot: ties go to the lower slot
    proven = True
    if not complete_view:
        wanted = min(k, n_classes)
        if len(cand) < wanted:
            proven = False
        elif len(cand):
            limit = np.inf
            partial = ~complete
            if partial.any():
                lower = (floor[partial] + (need[partial] - used[partial]) * bound) / need[partial]
                limit = float(lower.min())
            if len(uniq) < n_classes:
                limit = min(limit, bound)
            # Strict: a class that could tie the k-th might rank before it (ties go by slot).
            proven = bool(exact[cand[-1]] < limit)
    nearest = tuple(tuple(int(x) for x in item[start[c]:start[c] + used[c]]) for c in cand)
    return ClassScores(uniq[cand].astype(np.int64), exact[cand], nearest), proven


def prototypes(means: np.ndarray) -> np.ndarray:
    """Unit-length class prototypes float64 (c, dim) from class means float32 (c, dim).

    A zero mean (exemplars that cancel out) has no direction and stays zero. The norm is taken
    with `exact_distances`, so a class's prototype has the same bits whichever classes come with it.
    """
    protos = means.astype(np.float64)
    norms = exact_distances(np.zeros(protos.shape[1], dtype=np.float32), means)
    protos /= np.where(norms > 0, norms, 1.0)[:, None]
    return protos


PROTOTYPE_MARGIN = 8  # candidates recomputed beyond k, so that the k-th rarely needs a full pass


def rank_prototypes(
    queries: np.ndarray, means: np.ndarray, slots: np.ndarray, k: int, *, block: int = 1 << 24
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k classes by distance to their unit-length prototype (`prototypes` of the class means).

    queries float32 (n, dim); means float32 (n_slots, dim); slots int64 (c,): the candidate classes.
    Returns (slots int64 (n, k'), distances float64 (n, k') ascending, ties by slot), k' = min(k, c).
    Candidates come from a float64 matrix product; the reported distances are `exact_distances`
    to the prototypes, and the top k' are checked against the matrix product's error bound (a query
    that fails it is ranked against every class exactly).
    """
    n, dim = queries.shape
    c = len(slots)
    kk = min(k, c)
    out_s = np.zeros((n, kk), dtype=np.int64)
    out_d = np.zeros((n, kk), dtype=np.float64)
    if kk == 0:
        return out_s, out_d
    protos = prototypes(means[slots])
    p_sq = np.einsum("ij,ij->i", protos, protos)
    deep = min(kk + PROTOTYPE_MARGIN, c)
    rows = max(1, block // max(c, 1))
    for lo in range(0, n, rows):
        q32 = queries[lo:lo + rows]
        q = q32.astype(np.float64)
        q_sq = np.einsum("ij,ij->i", q, q)
        if deep < c:
            d2 = q_sq[:, None] + p_sq[None, :] - 2.0 * (q @ protos.T)
            part = np.argpartition(d2, deep, axis=1)
            cand = part[:, :deep]
            # Nearest of the rest by the matrix product, less its worst-case float64 error.
            rest = np.take_along_axis(d2, part[:, deep:deep + 1], axis=1)[:, 0]
            slack = (2 * dim + 16) * F64_EPS * (q_sq + float(p_sq.max()))
            rest_bound = np.sqrt(np.maximum(rest - slack, 0.0))
        else:
            cand = np.broadcast_to(np.arange(c), (len(q32), c))
            rest_bound = np.full(len(q32), np.inf)
        dist = exact_distances(q32[:, None, :], protos[cand])
        order = np.lexsort((slots[cand], dist), axis=1)
        cand = np.take_along_axis(cand, order, axis=1)[:, :kk]
        dist = np.take_along_axis(dist, order, axis=1)[:, :kk]
        for j in np.flatnonzero(~(dist[:, -1] < rest_bound)):  # not proven: every class, exactly
            every = exact_distances(q32[j], protos)
            best = np.lexsort((slots, every))[:kk]
            cand[j], dist[j] = best, every[best]
        out_s[lo:lo + rows] = slots[cand]
        out_d[lo:lo + rows] = dist
    return out_s, out_d


def class_distance(distances: np.ndarray, per_class: int) -> float:
    """Class distance from all of a class's exemplar distances (float64 (m,), from `exact_distances`):
    the mean of the per_class smallest, summed in ascending order as `score_neighbors` sums them."""
    m = min(per_class, len(distances))
    return sequential_sum(np.sort(distances)[:m]) / m
