"""Recall@10 of the approximate index kinds (defaults) against exact search, on seeded clustered data."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from twinsearch.client.types import IndexKind, IndexSpec

from .conftest import clustered, unit

log = logging.getLogger(__name__)
DIM = 64


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(99)
    x, labels = clustered(rng, 400, 50, dim=DIM, spread=0.35)  # 20,000 vectors, nn distance ~0.95
    q = unit(x[rng.choice(len(x), 300, replace=False)] + 0.1 * rng.normal(size=(300, DIM)).astype(np.float32))
    return x, labels, q


@pytest.mark.parametrize("kind", [IndexKind.IVF, IndexKind.HNSW])
def test_recall_at_10_of_defaults(store, data, kind, record_property):
    x, labels, q = data
    first = {}
    for name, spec in (("exact", IndexSpec()), ("approx", IndexSpec(kind=kind))):
        store.create_gallery(name, fingerprint="m", dim=DIM, index=spec)
        for lo in range(0, len(x), 5000):
            got = store.enroll(name, labels[lo:lo + 5000], x[lo:lo + 5000])
            first.setdefault(name, got[0].id)
    if kind == IndexKind.IVF:
        assert store._galleries["approx"].index.is_ivf  # trained, not the flat stand-in
    exact = store.search("exact", q, k=10)
    approx = store.search("approx", q, k=10)
    # item ids are store-wide: compare positions in the enrolled data
    found = [{n.id - first["approx"] for n in row} for row in approx]
    truth = [{n.id - first["exact"] for n in row} for row in exact]
    recall = np.mean([len(a & e) / 10 for a, e in zip(found, truth, strict=True)])
    record_property(f"recall_at_10_{kind.value}", recall)
    log.info("recall@10 %s defaults: %.4f", kind.value, recall)
    print(f"recall@10 {kind.value}: {recall:.4f}")
    assert recall >= 0.95
