"""N-way k-shot episodes: `way` classes, `shot` support and `query` query images each.

Each episode is (support, query): int64 arrays of shape (way, shot) and (way, query), row c being class
c of the episode. With `groups` (class -> group index) and `within_group`, all classes of an episode come
from one group (e.g. one Omniglot alphabet); groups with fewer than `way` classes give episodes of as many
classes as they have (Tagalog: 17-way), and groups are drawn with equal probability.
"""

from __future__ import annotations

import numpy as np


class EpisodeSampler:
    def __init__(self, labels: np.ndarray, way: int, shot: int = 1, query: int = 1, episodes: int = 100,
                 groups: np.ndarray | None = None, within_group: bool = False, seed: int = 0):
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        self.by_class = {int(c): np.flatnonzero(self.labels == c) for c in self.classes}
        eligible = [int(c) for c in self.classes if len(self.by_class[int(c)]) >= shot + query]
        if len(eligible) < 2:
            raise ValueError(f"need at least 2 classes with >= {shot + query} images")
        self.way, self.shot, self.query, self.episodes, self.seed = way, shot, query, episodes, seed
        if within_group:
            if groups is None:
                raise ValueError("within_group needs the group of each class")
            pools: dict[int, list[int]] = {}
            for c in eligible:
                pools.setdefault(int(groups[c]), []).append(c)
            self.pools = [np.array(v) for _, v in sorted(pools.items()) if len(v) >= 2]
        else:
            self.pools = [np.array(eligible)]

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.episodes):
            pool = self.pools[rng.integers(len(self.pools))]
            chosen = rng.choice(pool, size=min(self.way, len(pool)), replace=False)
            support, query = [], []
            for c in chosen:
                picks = rng.choice(self.by_class[int(c)], size=self.shot + self.query, replace=False)
                support.append(picks[:self.shot])
                query.append(picks[self.shot:])
            yield np.array(support, dtype=np.int64), np.array(query, dtype=np.int64)
