"""Class-balanced batches: P classes x K images each, for in-batch mining (triplet, contrastive,
normalised softmax). Classes with fewer than K images are sampled with replacement. With class groups and
`groups_per_batch`, a batch's classes come from that many groups (batches may then hold fewer than P
classes), unless every group is a single class."""

from __future__ import annotations

import numpy as np


class PKSampler:
    """Yields (P*K,) int64 index arrays, class-major ([c1 x K, c2 x K, ...]), forever or `batches` times."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int = 0, batches: int | None = None,
                 class_groups: np.ndarray | None = None, groups_per_batch: int = 0,
                 forges: np.ndarray | None = None):
        self.labels = np.asarray(labels)
        present = np.unique(self.labels)
        # Forgery classes ride along with the class they imitate; they are never drawn on their own.
        self.companion: dict[int, int] = {}
        if forges is not None:
            forges = np.asarray(forges)
            self.companion = {int(forges[c]): int(c) for c in present if forges[c] >= 0}
            present = np.array([c for c in present if forges[c] < 0], dtype=present.dtype)
        self.classes = present
        if p > len(self.classes):
            raise ValueError(f"P = {p} classes per batch, but only {len(self.classes)} classes")
        self.by_class = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.by_label = {int(c): members for c, members in zip(self.classes, self.by_class, strict=True)}
        for forgery in self.companion.values():
            self.by_label[forgery] = np.flatnonzero(self.labels == forgery)
        self.p, self.k, self.batches = p, k, batches
        self.rng = np.random.default_rng(seed)
        # Hard batches: classes drawn from `groups_per_batch` groups only (e.g. one alphabet), so that the
        # loss has to tell apart classes that look alike, as within-group one-shot tests demand.
        self.pools: list[np.ndarray] = []
        # Groups of one class each (a flat folder of classes: each class is its own group) have nothing alike
        # to draw together, and would make batches of `groups_per_batch` classes: such batches are plain P x K.
        if groups_per_batch and class_groups is not None:
            cg = np.asarray(class_groups)[self.classes]
            groups = np.unique(cg)
            if len(groups) < len(self.classes):
                self.pools = [np.flatnonzero(cg == g) for g in groups]
                self.groups_per_batch = min(groups_per_batch, len(self.pools))

    def _choose(self) -> np.ndarray:
        if not self.pools:
            return self.rng.choice(len(self.classes), size=self.p, replace=False)
        sizes = np.array([len(p) for p in self.pools], dtype=np.float64)
        picked = self.rng.choice(len(self.pools), size=self.groups_per_batch, replace=False, p=sizes / sizes.sum())
        pool = np.concatenate([self.pools[g] for g in picked])
        return self.rng.choice(pool, size=min(self.p, len(pool)), replace=False)

    def __iter__(self):
        count = 0
        while self.batches is None or count < self.batches:
            chosen = self._choose()
            parts = []
            for c in chosen:
                members = self.by_class[c]
                parts.append(self.rng.choice(members, size=self.k, replace=len(members) < self.k))
            for c in chosen:
                forgery = self.companion.get(int(self.classes[c]))
                if forgery is not None:
                    members = self.by_label[forgery]
                    parts.append(self.rng.choice(members, size=self.k, replace=len(members) < self.k))
            yield np.concatenate(parts).astype(np.int64)
            count += 1
