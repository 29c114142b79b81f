"""Reference-based verification, what a signature user does: enroll R genuine images of a class (a
writer), then score probes against that class.

For each genuine class with more than R genuine images, R of them (seeded) are its references; its
other genuine images are genuine probes, its skilled forgeries (`forges`) are skilled impostors, and the
genuine images of every other class are random impostors ("random forgeries"). A probe's distance to the
class is the gallery's class scoring over the references: "nearest" (the nearest reference, the server's
default), "prototype" (the unit-length mean of the references) or "mean_of_k" (mean of the k nearest).
Distances are Euclidean between unit embeddings, in [0, 2]: smaller means more alike.

Cohort normalization (`cohort=True`, the server's `verify_class(..., cohort=True)`): a probe's class
distance is divided by a power (`COHORT_POWER`) of its distance to the nearest *other* enrolled class (the
cohort: every other class with references), so a probe that is near every class, as an unrelated
writer's signature near a crowd of writers can be, is judged more strictly than one near its claimed
class alone. The score is no longer a distance on the model's scale, so the model's calibrated
thresholds do not apply to it: its threshold comes from evaluating held-out classes this way.
"""

from __future__ import annotations

import numpy as np

from .metrics import verification

SCORINGS = ("nearest", "prototype", "mean_of_k")

# Chosen on validation writers of the signature training data (three splits of writers 001-048, 5
# references, 10 other classes as the cohort): of 0.125, 0.25, 0.375 and 0.5, the power that brought the
# random-forgery EER under 2% (4.1% -> 1.7%, mean of the splits) at the smallest cost in skilled-forgery
# EER (18.9% -> 19.7%). README, Signatures.
COHORT_POWER = 0.25
# The EERs' 95% intervals (`eer_interval`): resamples of the classes, and the most thresholds tabulated.
INTERVAL_RESAMPLES = 1000
INTERVAL_THRESHOLDS = 4000


def cohort_normalized(class_dist: np.ndarray, cohort_dist: np.ndarray, power: float = COHORT_POWER) -> np.ndarray:
    """Class distances over `cohort_dist` ** power, where `cohort_dist` is each probe's distance to the
    nearest other enrolled class (same shape). Smaller = more alike; a cohort distance of 0 is read as
    1e-6 so the score stays finite."""
    c = np.maximum(np.asarray(cohort_dist, dtype=np.float64), 1e-6)
    return np.asarray(class_dist, dtype=np.float64) / c ** power


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
                        scoring: str = "nearest", mean_k: int = 3, seed: int = 0, cohort: bool = False,
                        cohort_power: float = COHORT_POWER) -> dict:
    """Class distances of genuine probes, skilled forgeries and random forgeries with `references` genuine
    references per class (with `cohort`, cohort-normalized against every other class's references, at
    `cohort_power`).
    Returns {"genuine", "skilled", "random"}: 1-D float64 arrays; "genuine_class", "skilled_class",
    "random_class": for each of those distances, the class whose references it was measured against; and
    "classes": the number of classes that had enough genuine images (more than `references`)."""
    if references < 1:
        raise ValueError(f"references must be >= 1, got {references}")
    emb = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    forges = np.full(num_classes, -1, dtype=np.int64) if forges is None else np.asarray(forges)
    forged_image = forges[labels] >= 0
    rng = np.random.default_rng(seed)
    refs: dict[int, np.ndarray] = {}
    for c in np.flatnonzero(forges < 0):
        members = np.flatnonzero((labels == c) & ~forged_image)
        if len(members) > references:
            refs[int(c)] = rng.choice(members, size=references, replace=False)
    if cohort and len(refs) < 2:
        raise ValueError("cohort normalization needs at least two classes with references")

    # Every image's class distance to every class with references, (images, classes), computed once: an
    # image is scored against its own class, and against every other as a random forgery or as a cohort.
    dist = np.zeros((len(emb), 0))
    if refs:
        dist = np.stack([class_distance(emb, emb[r], scoring, mean_k) for r in refs.values()], axis=1)

    def score(probes: np.ndarray, j: int) -> np.ndarray:
        d = dist[probes, j]
        return cohort_normalized(d, np.delete(dist[probes], j, axis=1).min(1), cohort_power) if cohort else d

    parts: dict[str, list[np.ndarray]] = {kind: [] for kind in ("genuine", "skilled", "random")}
    owners: dict[str, list[np.ndarray]] = {kind: [] for kind in parts}
    for j, (c, class_refs) in enumerate(refs.items()):
        members = np.flatnonzero((labels == c) & ~forged_image)
        probes = {"genuine": np.setdiff1d(members, class_refs),
                  "skilled": np.flatnonzero(forged_image & (forges[labels] == c)),
                  "random": np.flatnonzero(~forged_image & (labels != c))}
        for kind, idx in probes.items():
            if len(idx):
                parts[kind].append(score(idx, j))
                owners[kind].append(np.full(len(idx), c, dtype=np.int64))

    def cat(arrays: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)

    out: dict = {kind: cat(parts[kind], np.float64) for kind in parts}
    out.update({f"{kind}_class": cat(owners[kind], np.int64) for kind in parts})
    out["classes"] = len(refs)
    return out


def eer_interval(genuine: np.ndarray, impostor: np.ndarray, genuine_class: np.ndarray, impostor_class: np.ndarray,
                 resamples: int = INTERVAL_RESAMPLES, seed: int = 0) -> list[float] | None:
    """A 95% interval [low, high] of the equal error rate over classes: the classes whose references were
    scored are drawn with replacement `resamples` times, each draw's genuine and impostor distances pooled
    (a class drawn twice counts twice) and its EER measured as `verification` measures it (the mean of
    FAR and FRR where they are closest); the interval is the 2.5th and 97.5th percentiles of those EERs.
    With a few dozen writers, which writers were measured moves an EER by several points: this says how
    many. None with fewer than 2 classes.

    Each class's accepted genuine and impostor counts are tabulated once at every distance that occurs
    (at most INTERVAL_THRESHOLDS of them, quantiles beyond that), so a draw is a weighted sum of rows."""
    genuine, impostor = np.asarray(genuine, dtype=np.float64), np.asarray(impostor, dtype=np.float64)
    classes = np.union1d(genuine_class, impostor_class)
    if len(classes) < 2 or not genuine.size or not impostor.size:
        return None
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    if len(thresholds) > INTERVAL_THRESHOLDS:
        thresholds = np.unique(np.quantile(thresholds, np.linspace(0.0, 1.0, INTERVAL_THRESHOLDS)))

    def accepted(d: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(classes, thresholds) counts of distances <= each threshold, and (classes,) totals."""
        where = np.searchsorted(classes, owner)
        rows = [np.searchsorted(np.sort(d[where == k]), thresholds, side="right") for k in range(len(classes))]
        return np.array(rows, dtype=np.float64), np.bincount(where, minlength=len(classes)).astype(np.float64)

    (g_acc, g_tot), (i_acc, i_tot) = accepted(genuine, genuine_class), accepted(impostor, impostor_class)
    draws = np.random.default_rng(seed).multinomial(len(classes), np.full(len(classes), 1.0 / len(classes)),
                                                    size=int(resamples)).astype(np.float64)
    g_n, i_n = draws @ g_tot, draws @ i_tot
    ok = (g_n > 0) & (i_n > 0)  # a draw of classes without genuine probes or impostors has no EER
    if not ok.any():
        return None
    far = (draws[ok] @ i_acc) / i_n[ok, None]
    frr = 1.0 - (draws[ok] @ g_acc) / g_n[ok, None]
    best = np.argmin(np.abs(far - frr), axis=1)
    rows = np.arange(len(best))
    eers = (far[rows, best] + frr[rows, best]) / 2
    low, high = np.percentile(eers, [2.5, 97.5])
    return [float(low), float(high)]


def reference_report(embeddings: np.ndarray, labels: np.ndarray, forges: np.ndarray | None, references: int,
                     threshold: float | None = None, scoring: str = "nearest", mean_k: int = 3,
                     seed: int = 0, cohort: bool = False, interval: bool = True) -> tuple[dict, dict]:
    """The report for `references` references per class, and the raw distances (for plots).

    Report keys: "count" (references per class), "classes", "scoring", "genuine_probes",
    "skilled_forgeries", "random_forgeries", "skilled_eer" and "random_eer" (equal error rates measured on
    these distances, None when there are no such impostors), "skilled_eer_ci95" and "random_eer_ci95" (their
    95% intervals over the classes, `eer_interval`; None without `interval`, which training's validation
    does not need), "skilled_roc_auc", "random_roc_auc", and with a `threshold` (a class distance; accept
    when <=): "threshold", "frr", "far_skilled", "far_random"."""
    raw = reference_distances(embeddings, labels, forges, references, scoring, mean_k, seed, cohort)
    g = raw["genuine"]
    report: dict = {"count": int(references), "classes": int(raw["classes"]), "scoring": scoring, "cohort": cohort,
                    "genuine_probes": int(g.size), "skilled_forgeries": int(raw["skilled"].size),
                    "random_forgeries": int(raw["random"].size)}
    for kind in ("skilled", "random"):
        imp = raw[kind]
        if g.size >= 2 and imp.size >= 2:
            v = verification(g, imp)
            report[f"{kind}_eer"] = v["eer"]
            report[f"{kind}_eer_ci95"] = (eer_interval(g, imp, raw["genuine_class"], raw[f"{kind}_class"], seed=seed)
                                          if interval else None)
            report[f"{kind}_roc_auc"] = v["roc_auc"]
            report[f"{kind}_eer_threshold"] = v["eer_threshold"]
        else:
            report[f"{kind}_eer"] = None
            report[f"{kind}_eer_ci95"] = None
            report[f"{kind}_roc_auc"] = None
    if threshold is not None and g.size:
        report["threshold"] = float(threshold)
        report["frr"] = float((g > threshold).mean())
        report["far_skilled"] = float((raw["skilled"] <= threshold).mean()) if raw["skilled"].size else None
        report["far_random"] = float((raw["random"] <= threshold).mean()) if raw["random"].size else None
    return report, raw
