"""Shared helpers for the gallery core tests: seeded data, a brute-force ranking, a calibration."""

from __future__ import annotations

import numpy as np
import pytest

from twinsearch.client.types import Scoring
from twinsearch.encoder.calibration import Calibration
from twinsearch.server.store import GalleryStore, StoreSettings

DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n_classes: int, per_class, dim: int = DIM, spread: float = 0.35):
    """Unit vectors around random class centres: (vectors float32 (n, dim), labels list)."""
    centres = unit(rng.normal(size=(n_classes, dim)))
    counts = [per_class] * n_classes if np.isscalar(per_class) else list(per_class)
    vecs, labels = [], []
    for c, m in enumerate(counts):
        vecs.append(unit(centres[c] + spread * rng.normal(size=(m, dim)) / np.sqrt(dim) * 3))
        labels += [f"class-{c:03d}"] * m
    return np.concatenate(vecs).astype(np.float32), labels


def brute_rank(q: np.ndarray, x: np.ndarray, labels: list[str], scoring: Scoring, mean_k: int, k: int,
               restrict: list[str] | None = None) -> list[tuple[str, float]]:
    """Reference ranking in float64 numpy: [(label, class distance)] ascending, top k."""
    lab = np.array(labels)
    names = sorted(set(labels) if restrict is None else set(restrict))
    scores = []
    for name in names:
        xs = x[lab == name].astype(np.float64)
        d = np.linalg.norm(xs - q.astype(np.float64), axis=1)
        if scoring == Scoring.NEAREST:
            s = d.min()
        elif scoring == Scoring.MEAN_OF_K:
            s = np.sort(d)[: min(mean_k, len(d))].mean()
        else:
            m = xs.mean(axis=0)
            s = np.linalg.norm(q - m / np.linalg.norm(m))
        scores.append((name, float(s)))
    scores.sort(key=lambda t: t[1])
    return scores[:k]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def store(tmp_path):
    s = GalleryStore.open(tmp_path / "store", StoreSettings(synchronous="NORMAL"))
    yield s
    s.close()


@pytest.fixture(scope="session")
def calibration() -> Calibration:
    r = np.random.default_rng(7)
    genuine = np.clip(r.normal(0.6, 0.15, 4000), 0, 2)
    impostor = np.clip(r.normal(1.3, 0.15, 4000), 0, 2)
    return Calibration.fit(genuine, impostor)
