"""Evaluation metrics over embeddings (numpy arrays; faiss for nearest neighbours).

Embeddings are (N, D) float32 L2-normalised rows; distances are Euclidean (smaller = more alike).
"""

from __future__ import annotations

import numpy as np

from ..samplers import EpisodeSampler


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a random genuine pair is closer than a random impostor pair (ties count 1/2)."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.sort(np.asarray(impostor, dtype=np.float64))
    below = np.searchsorted(i, g, side="left")   # impostors strictly closer than each genuine
    above = i.size - np.searchsorted(i, g, side="right")
    ties = i.size - below - above
    return float((above + 0.5 * ties).sum() / (g.size * i.size))


def roc_curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds) with thresholds increasing; accept when distance <= threshold."""
    thr = np.unique(np.concatenate([genuine, impostor]))
    far = np.searchsorted(np.sort(impostor), thr, side="right") / len(impostor)
    tar = np.searchsorted(np.sort(genuine), thr, side="right") / len(genuine)
    return far, tar, thr


def verification(genuine: np.ndarray, impostor: np.ndarray, threshold: float | None = None) -> dict:
    """Pair verification report. `threshold` (distance) is the decision rule for `accuracy`; when None
    the EER threshold measured on these pairs is used (optimistic; say so). Accuracy is over all pairs."""
    from ..calibration import Calibration

    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    cal = Calibration.fit(genuine, impostor)
    eer_point = cal.points["eer"]
    thr = eer_point.distance if threshold is None else float(threshold)
    correct = (genuine <= thr).sum() + (impostor > thr).sum()
    far, tar, thresholds = roc_curve(genuine, impostor)
    acc_all = ((np.searchsorted(np.sort(genuine), thresholds, side="right")
                + impostor.size - np.searchsorted(np.sort(impostor), thresholds, side="right"))
               / (genuine.size + impostor.size))
    tar_at = {}
    for name, target in (("far_1", 0.01), ("far_0_1", 0.001)):
        ok = far <= target
        tar_at[name] = float(tar[ok].max()) if ok.any() else 0.0
    return {
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "threshold": thr,
        "threshold_source": "given" if threshold is not None else "eer_on_these_pairs",
        "accuracy": float(correct / (genuine.size + impostor.size)),
        "best_accuracy": float(acc_all.max()),
        "roc_auc": roc_auc(genuine, impostor),
        "eer": float((eer_point.far + eer_point.frr) / 2),
        "eer_threshold": eer_point.distance,
        "tar_at_far": tar_at,
        "genuine_mean": float(genuine.mean()),
        "impostor_mean": float(impostor.mean()),
    }


def pair_distances(embeddings: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pair (a[i], b[i]): (P,) float64."""
    diff = embeddings[a].astype(np.float64) - embeddings[b].astype(np.float64)
    return np.sqrt((diff * diff).sum(1))


def oneshot_accuracy(embeddings: np.ndarray, labels: np.ndarray, way: int, shot: int = 1, episodes: int = 400,
                     query: int = 1, class_groups: np.ndarray | None = None, within_group: bool = False,
                     group_names: list[str] | None = None, seed: int = 0) -> dict:
    """N-way k-shot accuracy: each query goes to the class whose prototype (mean of its `shot` support
    embeddings) is nearest. `class_groups[c]` is the group index of class c (for within-group episodes).
    Returns accuracy, its 95% interval half-width over episodes, the mean way, and per-group accuracy."""
    sampler = EpisodeSampler(labels, way, shot, query, episodes, class_groups, within_group, seed)
    accs, ways, per_group = [], [], {}
    for support, queries in sampler:
        protos = embeddings[support].mean(1)  # (way, D)
        q = embeddings[queries.reshape(-1)]  # (way * query, D)
        truth = np.repeat(np.arange(len(support)), queries.shape[1])
        d = (q * q).sum(1)[:, None] + (protos * protos).sum(1)[None, :] - 2 * q @ protos.T
        acc = float((d.argmin(1) == truth).mean())
        accs.append(acc)
        ways.append(len(support))
        if class_groups is not None:
            g = int(class_groups[labels[support[0, 0]]])
            name = group_names[g] if group_names else str(g)
            per_group.setdefault(name, []).append(acc)
    accs_arr = np.array(accs)
    return {
        "accuracy": float(accs_arr.mean()),
        "ci95": float(1.96 * accs_arr.std(ddof=1) / np.sqrt(len(accs_arr))) if len(accs_arr) > 1 else 0.0,
        "episodes": len(accs),
        "way": way,
        "mean_way": float(np.mean(ways)),
        "shot": shot,
        "query": query,
        "within_group": within_group,
        "per_group": {k: {"accuracy": float(np.mean(v)), "episodes": len(v)} for k, v in sorted(per_group.items())}
        if within_group else {},
    }


def retrieval(embeddings: np.ndarray, labels: np.ndarray) -> dict:
    """Recall@1 (each item's nearest other item has its class) and MAP@R (Musgrave et al. 2020) with
    every item as a query against all the others (exact search)."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    r = counts[labels] - 1
    k = int(min(r.max(), len(labels) - 1)) + 1
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    # A few more than needed, ranked again by float64 distances (ties by position): the order of neighbours
    # that float32 rounding leaves tied or swapped does not depend on FAISS's kernel or thread count.
    _, nn = index.search(x, min(k + 8, len(x)))
    rows = []
    for i in range(len(x)):
        # drop the query itself (it may not come first when duplicates tie)
        cand = nn[i][(nn[i] >= 0) & (nn[i] != i)]
        d = pair_distances(x, cand, np.full(len(cand), i))
        rows.append(cand[np.lexsort((cand, d))][: k - 1])
    nn = np.stack(rows)
    rel = labels[nn] == labels[:, None]
    recall1 = float(rel[:, 0].mean())
    ranks = np.arange(1, k)
    precision = np.cumsum(rel, axis=1) / ranks
    within_r = ranks[None, :] <= r[:, None]
    ap = (precision * rel * within_r).sum(1) / np.maximum(r, 1)
    valid = r > 0
    return {"recall_at_1": recall1, "map_at_r": float(ap[valid].mean()), "queries": int(len(x))}
