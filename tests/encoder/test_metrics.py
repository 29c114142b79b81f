from __future__ import annotations

import numpy as np
import pytest

from twinsearch.encoder.evaluation import (
    all_pair_distances,
    calibrate,
    evaluate_embeddings,
    oneshot_accuracy,
    retrieval,
    roc_auc,
    verification,
)


def _embeddings(noise: float, n_classes: int = 6, per: int = 5, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per)
    x = centers[labels] + noise * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_roc_auc_matches_brute_force():
    rng = np.random.default_rng(1)
    g, i = rng.normal(0.5, 0.2, 50), rng.normal(1.0, 0.2, 70)
    g[:3] = i[:3]  # some ties
    brute = np.mean([(1.0 if x < y else 0.5 if x == y else 0.0) for x in g for y in i])
    assert roc_auc(g, i) == pytest.approx(brute)


def test_perfect_embeddings_score_perfectly():
    x, labels = _embeddings(0.0)
    assert oneshot_accuracy(x, labels, way=5, episodes=20)["accuracy"] == 1.0
    r = retrieval(x, labels)
    assert r["recall_at_1"] == 1.0 and r["map_at_r"] == pytest.approx(1.0)


def test_retrieval_known_case():
    x = np.array([[0.0], [0.1], [1.0], [1.1], [0.4]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    r = retrieval(x, labels)
    # item 4's nearest (0.1) is class 0: recall 4/5. MAP@R: items 0, 1 (R=1): 1 each; items 2, 3 (R=2): their
    # two nearest are the other two of class 1: 1 each; item 4 (R=2): nearest two are class 0: 0.
    assert r["recall_at_1"] == pytest.approx(0.8)
    assert r["map_at_r"] == pytest.approx(0.8)


def test_verification_and_report():
    x, labels = _embeddings(0.6)
    g, i = all_pair_distances(x, labels)
    assert len(g) == 6 * 10 and len(g) + len(i) == 30 * 29 // 2
    v = verification(g, i)
    assert 0.5 < v["roc_auc"] <= 1 and 0 <= v["eer"] < 0.5 and set(v["tar_at_far"]) == {"far_1", "far_0_1"}
    cal = calibrate(x, labels)
    assert cal.genuine_pairs == 60
    report, raw = evaluate_embeddings(x, labels, way=5, episodes=30, threshold=cal.points["eer"].distance)
    for key in ("oneshot", "pairs", "recall_at_1", "map_at_r"):
        assert key in report
    assert report["pairs"]["threshold_source"] == "model_calibration_eer"
    assert len(raw["genuine"]) == len(labels)
