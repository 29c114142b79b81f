"""The classic pair builder: for every image one same-class and one other-class partner.

Returns index arrays (a, b) and labels y (1 = same class, 0 = different): 2N pairs for N images, in a
seeded random order. Used for contrastive training with `ContrastiveLoss(pairs="given")` and for the
classic pair-verification evaluation.
"""

from __future__ import annotations

import numpy as np


def classic_pairs(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels (N,) int -> (a, b, y): int64 (2N,) each; images whose class has one image get no positive."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    n = len(labels)
    by_class: dict[int, np.ndarray] = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    if len(by_class) < 2:
        raise ValueError("pairs need at least two classes")
    a, b, y = [], [], []
    for i in range(n):
        members = by_class[int(labels[i])]
        if len(members) > 1:
            j = i
            while j == i:
                j = int(members[rng.integers(len(members))])
            a.append(i)
            b.append(j)
            y.append(1)
        j = int(rng.integers(n))
        while labels[j] == labels[i]:
            j = int(rng.integers(n))
        a.append(i)
        b.append(j)
        y.append(0)
    order = rng.permutation(len(a))
    return (np.asarray(a, dtype=np.int64)[order], np.asarray(b, dtype=np.int64)[order],
            np.asarray(y, dtype=np.int64)[order])


class PairBatchSampler:
    """Batches of classic pairs, each laid out [a_1..a_m, b_1..b_m] for `ContrastiveLoss(pairs="given")`.

    Iterating yields (2m,) int64 index arrays; a fresh set of pairs is drawn every epoch."""

    def __init__(self, labels: np.ndarray, pairs_per_batch: int = 64, seed: int = 0):
        self.labels = np.asarray(labels)
        self.m = pairs_per_batch
        self.seed = seed
        self.epoch = 0

    def __iter__(self):
        a, b, _ = classic_pairs(self.labels, self.seed + self.epoch)
        self.epoch += 1
        for s in range(0, len(a) - self.m + 1, self.m):
            yield np.concatenate([a[s:s + self.m], b[s:s + self.m]])
