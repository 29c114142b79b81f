"""Class-level distances from nearest-neighbour results, with a proof that the top classes are exact.

All distances here are Euclidean distances (not squared), smaller = more alike.

For nearest-exemplar and mean-of-k scoring, a search of depth D returns each probe's D nearest
items (ascending). A class whose needed exemplars (1, or min(mean_k, class size)) all appear is
scored exactly. A class only partly seen, or not seen at all, can score no better than if its unseen
exemplars sat at the deepest distance returned (every unseen item is at least that far), which gives
a lower bound. The top k are exact once the k-th exact score is <= every lower bound; otherwise the
caller searches deeper. So a class with 1,000 exemplars cannot crowd others out of the top k.

Prototype scoring is a brute-force distance to every class's unit-length mean: exact, whatever the
index kind, and cheap (one matrix product over classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScores:
    """Ranked classes for one probe: slots int64 (k,), distances float64 (k,) ascending, nearest ids."""

    slots: np.ndarray
    distances: np.ndarray
    nearest_ids: tuple[tuple[int, ...], ...]


def score_neighbors(
    sq_dist: np.ndarray,
    ids: np.ndarray,
    slots: np.ndarray,
    counts: np.ndarray,
    *,
    per_class: int,
    k: int,
    n_classes: int,
    complete_view: bool,
) -> tuple[ClassScores, bool]:
    """Rank classes for one probe from its neighbour list.

    sq_dist float32 (D,) squared L2 ascending as FAISS returns them; ids int64 (D,) (-1 past the end);
    slots int64 (D,) class slot per neighbour, -1 for padding or deleted items; counts int64 per slot;
    per_class: exemplars averaged per class (1 = nearest exemplar, mean_k for mean-of-k);
    n_classes: live classes that could be ranked; complete_view: the list holds every candidate item.

    Returns (scores for up to k classes, whether they are proven to be the exact top k).
    """
    returned = ids >= 0
    deepest = float(np.sqrt(max(float(sq_dist[returned].max()), 0.0))) if returned.any() else 0.0
    live = slots >= 0
    d = np.sqrt(np.maximum(sq_dist[live].astype(np.float64), 0.0))
    s = slots[live]
    item = ids[live]
    if not len(s):
        empty = ClassScores(np.zeros(0, np.int64), np.zeros(0), ())
        return empty, complete_view or n_classes == 0
    order = np.argsort(s, kind="stable")  # within a class, stays ascending by distance
    s, d, item = s[order], d[order], item[order]
    uniq, start, seen = np.unique(s, return_index=True, return_counts=True)
    rank = np.arange(len(s)) - np.repeat(start, seen)
    need = np.minimum(per_class, counts[uniq])
    used_mask = rank < np.repeat(need, seen)
    sums = np.add.reduceat(np.where(used_mask, d, 0.0), start)
    used = np.minimum(seen, need)
    complete = np.ones(len(uniq), dtype=bool) if complete_view else used >= need
    # Equal to sums / need for a complete class; an exhausted approximate list may hold fewer.
    exact = sums / np.maximum(used, 1)

    cand = np.flatnonzero(complete)
    cand = cand[np.argsort(exact[cand], kind="stable")][:k]
    proven = True
    if not complete_view:
        wanted = min(k, n_classes)
        if len(cand) < wanted:
            proven = False
        elif len(cand):
            bound = np.inf
            partial = ~complete
            if partial.any():
                lower = (sums[partial] + (need[partial] - used[partial]) * deepest) / need[partial]
                bound = float(lower.min())
            if len(uniq) < n_classes:
                bound = min(bound, deepest)
            proven = bool(exact[cand[-1]] <= bound)
    nearest = tuple(tuple(int(x) for x in item[start[c]:start[c] + used[c]]) for c in cand)
    return ClassScores(uniq[cand].astype(np.int64), exact[cand], nearest), proven


def rank_prototypes(
    queries: np.ndarray, means: np.ndarray, slots: np.ndarray, k: int, *, block: int = 1 << 24
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k classes by distance to their unit-length prototype (normalised class mean).

    queries float32 (n, dim); means float32 (n_slots, dim); slots int64 (c,): the candidate classes.
    Returns (slots int64 (n, k'), distances float64 (n, k') ascending), k' = min(k, c).
    A class whose mean is the zero vector (exemplars that cancel out) has no direction; it is
    compared with its zero mean as is.
    """
    n = queries.shape[0]
    kk = min(k, len(slots))
    out_s = np.zeros((n, kk), dtype=np.int64)
    out_d = np.zeros((n, kk), dtype=np.float64)
    if kk == 0:
        return out_s, out_d
    protos = means[slots].astype(np.float64)
    norms = np.linalg.norm(protos, axis=1)
    protos = protos / np.where(norms > 0, norms, 1.0)[:, None]
    p_sq = np.einsum("ij,ij->i", protos, protos)
    rows = max(1, block // max(len(slots), 1))
    for lo in range(0, n, rows):
        q = queries[lo:lo + rows].astype(np.float64)
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + p_sq[None, :] - 2.0 * (q @ protos.T)
        if kk < len(slots):
            part = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(len(slots)), d2.shape)
        pd = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(pd, axis=1, kind="stable")
        out_s[lo:lo + rows] = slots[np.take_along_axis(part, order, axis=1)]
        out_d[lo:lo + rows] = np.sqrt(np.maximum(np.take_along_axis(pd, order, axis=1), 0.0))
    return out_s, out_d


def class_distance(distances: np.ndarray, per_class: int) -> float:
    """Class distance from all of a class's exemplar distances (float (m,)): mean of the per_class smallest."""
    m = min(per_class, len(distances))
    if m == len(distances):
        return float(np.mean(distances))
    return float(np.mean(np.partition(distances, m - 1)[:m]))
