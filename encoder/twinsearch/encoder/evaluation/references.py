"""Reference-based verification, what a signature user does: enroll R genuine images of a class (a
writer), then score probes against that class.

For each genuine class with more than R genuine images, R of them (seeded) are its references; its
other genuine images are genuine probes, its skilled forgeries (`forges`) are skilled impostors, and the
genuine images of every other class are random impostors ("random forgeries"). A probe's distance to the
class is the gallery's class scoring over the references: "nearest" (the nearest reference, the server's
default), "prototype" (the unit-length mean of the references) or "mean_of_k" (mean of the k nearest).
Distances are Euclidean between unit embeddings, in [0, 2]: smaller means more alike.
"""

from __future__ import annotations

import numpy as np

from .metrics import verification

SCORINGS = ("nearest", "prototype", "mean_of_k")


def references_allowed(genuine_labels: np.ndarray, at_most: int) -> int:
    """The most references (up to `at_most`, at least 1) that leave every class of `genuine_labels` (the
    labels of its genuine images) at least one genuine probe."""
    counts = np.bincount(np.asarray(genuine_labels))
    return int(max(1, min(at_most, counts[counts > 0].min() - 1)))


def class_distance(probes: np.ndarray, references: np.ndarray, scoring: str = "nearest",
                   mean_k: int = 3) -> np.ndarray:
    """(P, D) probes against one class's (R, D) references -> (P,) float64 class distances."""
    p = np.asarray(probes, dtype=np.float64)
    r = np.asarray(references, dtype=np.float64)
    if scoring == "prototype":
        proto = r.mean(0)
        proto /= max(np.linalg.norm(proto), 1e-12)
        return np.linalg.norm(p - proto[None, :], axis=1)
    d = np.sqrt(np.clip((p * p).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2 * p @ r.T, 0.0, None))
    if scoring == "nearest":
        return d.min(1)
    if scoring == "mean_of_k":
        k = max(1, min(mean_k, d.shape[1]))
        return np.sort(d, axis=1)[:, :k].mean(1)
    raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")


def reference_distances(embeddings: np.ndarray, labels: np.ndarray, forges: np.ndarray | None, references: int,
                        scoring: str = "nearest", mean_k: int = 3, seed: int = 0) -> dict:
    """Class distances of genuine probes, skilled forgeries and random forgeries with `references` genuine
    references per class. Returns {"genuine", "skilled", "random"}: 1-D float64 arrays, and "classes": the
    number of classes that had enough genuine images (more than `references`)."""
    if references < 1:
        raise ValueError(f"references must be >= 1, got {references}")
    emb = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    forges = np.full(num_classes, -1, dtype=np.int64) if forges is None else np.asarray(forges)
    forged_image = forges[labels] >= 0
    rng = np.random.default_rng(seed)
    genuine, skilled, random = [], [], []
    used = 0
    for c in np.flatnonzero(forges < 0):
        members = np.flatnonzero((labels == c) & ~forged_image)
        if len(members) <= references:
            continue
        used += 1
        refs = rng.choice(members, size=references, replace=False)
        probes = np.setdiff1d(members, refs)
        ref_emb = emb[refs]
        genuine.append(class_distance(emb[probes], ref_emb, scoring, mean_k))
        forgeries = np.flatnonzero(forged_image & (forges[labels] == c))
        if len(forgeries):
            skilled.append(class_distance(emb[forgeries], ref_emb, scoring, mean_k))
        others = np.flatnonzero(~forged_image & (labels != c))
        if len(others):
            random.append(class_distance(emb[others], ref_emb, scoring, mean_k))

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)

    return {"genuine": cat(genuine), "skilled": cat(skilled), "random": cat(random), "classes": used}


def reference_report(embeddings: np.ndarray, labels: np.ndarray, forges: np.ndarray | None, references: int,
                     threshold: float | None = None, scoring: str = "nearest", mean_k: int = 3,
                     seed: int = 0) -> tuple[dict, dict]:
    """The report for `references` references per class, and the raw distances (for plots).

    Report keys: "count" (references per class), "classes", "scoring", "genuine_probes",
    "skilled_forgeries", "random_forgeries", "skilled_eer" and "random_eer" (equal error rates measured on
    these distances, None when there are no such impostors), "skilled_roc_auc", "random_roc_auc", and with
    a `threshold` (a class distance; accept when <=): "threshold", "frr", "far_skilled", "far_random"."""
    raw = reference_distances(embeddings, labels, forges, references, scoring, mean_k, seed)
    g = raw["genuine"]
    report: dict = {"count": int(references), "classes": int(raw["classes"]), "scoring": scoring,
                    "genuine_probes": int(g.size), "skilled_forgeries": int(raw["skilled"].size),
                    "random_forgeries": int(raw["random"].size)}
    for kind in ("skilled", "random"):
        imp = raw[kind]
        if g.size >= 2 and imp.size >= 2:
            v = verification(g, imp)
            report[f"{kind}_eer"] = v["eer"]
            report[f"{kind}_roc_auc"] = v["roc_auc"]
            report[f"{kind}_eer_threshold"] = v["eer_threshold"]
        else:
            report[f"{kind}_eer"] = None
            report[f"{kind}_roc_auc"] = None
    if threshold is not None and g.size:
        report["threshold"] = float(threshold)
        report["frr"] = float((g > threshold).mean())
        report["far_skilled"] = float((raw["skilled"] <= threshold).mean()) if raw["skilled"].size else None
        report["far_random"] = float((raw["random"] <= threshold).mean()) if raw["random"].size else None
    return report, raw
