"""Class-balanced batches: P classes x K images each, for in-batch mining (triplet, contrastive,
normalised softmax). Classes with fewer than K images are sampled with replacement."""

from __future__ import annotations

import numpy as np


class PKSampler:
    """Yields (P*K,) int64 index arrays, class-major ([c1 x K, c2 x K, ...]), forever or `batches` times."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int = 0, batches: int | None = None):
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        if p > len(self.classes):
            raise ValueError(f"P = {p} classes per batch, but only {len(self.classes)} classes")
        self.by_class = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.p, self.k, self.batches = p, k, batches
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        count = 0
        while self.batches is None or count < self.batches:
            chosen = self.rng.choice(len(self.classes), size=self.p, replace=False)
            parts = []
            for c in chosen:
                members = self.by_class[c]
                parts.append(self.rng.choice(members, size=self.k, replace=len(members) < self.k))
            yield np.concatenate(parts).astype(np.int64)
            count += 1
