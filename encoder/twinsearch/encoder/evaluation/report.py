"""The evaluation report of `twinsearch evaluate` and of the end of training, and calibration pairs."""

from __future__ import annotations

import numpy as np

from ..calibration import Calibration
from ..samplers import classic_pairs
from .metrics import oneshot_accuracy, pair_distances, retrieval, verification


def all_pair_distances(embeddings: np.ndarray, labels: np.ndarray, max_impostor: int = 5_000_000,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distances of every genuine pair (i < j, same class) and of the impostor pairs (all of them, or a
    seeded random `max_impostor` of them): two 1-D float64 arrays."""
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(x)
    genuine, impostor = [], []
    sq = (x * x).sum(1)
    for s in range(0, n, 1024):
        block = x[s:s + 1024]
        d = np.sqrt(np.clip(sq[s:s + 1024, None] + sq[None, :] - 2 * block @ x.T, 0, None))
        rows = np.arange(s, s + len(block))[:, None]
        upper = np.arange(n)[None, :] > rows
        same = labels[s:s + 1024, None] == labels[None, :]
        genuine.append(d[upper & same])
        impostor.append(d[upper & ~same])
    g, imp = np.concatenate(genuine), np.concatenate(impostor)
    if len(imp) > max_impostor:
        imp = np.random.default_rng(seed).choice(imp, size=max_impostor, replace=False)
    return g, imp


def forgery_pair_distances(embeddings: np.ndarray, labels: np.ndarray,
                           forges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genuine pairs (two genuine images of one class) and skilled-forgery pairs (a genuine image of a
    class and a forgery of that class): two 1-D float64 arrays of distances."""
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    forged = forges[labels] >= 0
    genuine, skilled = [], []
    for c in np.flatnonzero(forges < 0):
        real = x[(labels == c) & ~forged]
        fake = x[forged & (forges[labels] == c)]
        d = np.linalg.norm(real[:, None, :] - real[None, :, :], axis=2)
        genuine.append(d[np.triu_indices(len(real), 1)])
        if len(fake):
            skilled.append(np.linalg.norm(real[:, None, :] - fake[None, :, :], axis=2).ravel())
    return np.concatenate(genuine), (np.concatenate(skilled) if skilled else np.zeros(0))


def calibrate(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0, probability: str = "logistic",
              forges: np.ndarray | None = None) -> Calibration:
    """Calibration from all pairs of held-out images (classes the model did not train on);
    `probability`: the distance-to-probability mapping, "logistic" or "isotonic" (see Calibration.fit).
    With `forges` (held-out data with skilled forgeries), the impostors are the skilled-forgery pairs:
    the threshold then answers "is this the writer or a forger of the writer", the question signature
    verification asks (random impostors lie farther away)."""
    if forges is not None and (forges >= 0).any():
        g, imp = forgery_pair_distances(embeddings, labels, forges)
        if imp.size >= 2:
            return Calibration.fit(g, imp, probability=probability)
    g, imp = all_pair_distances(embeddings, labels, seed=seed)
    return Calibration.fit(g, imp, probability=probability)


def evaluate_embeddings(embeddings: np.ndarray, labels: np.ndarray, *, way: int = 20, shot: int = 1,
                        episodes: int = 400, query: int = 1, class_groups: np.ndarray | None = None,
                        group_names: list[str] | None = None, within_group: bool = False,
                        threshold: float | None = None, seed: int = 0) -> tuple[dict, dict]:
    """The full report and the raw pair distances for plots.

    Report keys: "oneshot" (N-way k-shot), "pairs" (classic pairs: each image with one same-class and one
    other-class partner; accuracy at `threshold`, the model's calibrated EER threshold when given),
    "recall_at_1", "map_at_r", "data" (counts)."""
    a, b, y = classic_pairs(labels, seed)
    d = pair_distances(embeddings, a, b)
    genuine, impostor = d[y == 1], d[y == 0]
    pairs = verification(genuine, impostor, threshold)
    if threshold is not None:
        pairs["threshold_source"] = "model_calibration_eer"
    oneshot = oneshot_accuracy(embeddings, labels, way, shot, episodes, query, class_groups, within_group,
                               group_names, seed)
    ret = retrieval(embeddings, labels)
    report = {
        "oneshot": oneshot,
        "pairs": pairs,
        "recall_at_1": ret["recall_at_1"],
        "map_at_r": ret["map_at_r"],
        "data": {"images": int(len(labels)), "classes": int(len(np.unique(labels)))},
    }
    return report, {"genuine": genuine, "impostor": impostor}
