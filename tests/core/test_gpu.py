"""On a machine where faiss sees a GPU: exact and IVF galleries run there and answer as on the CPU.

Skipped where `faiss.get_num_gpus() == 0` (the CPU-only CI); run on a GPU machine to check the GPU path.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from twinsearch.client.types import IndexKind, IndexSpec, Scoring
from twinsearch.server.gallery import SearchLimits
from twinsearch.server.index import IndexParams
from twinsearch.server.store import GalleryStore, StoreSettings
from twinsearch.server.thresholds import ThresholdPolicy

from .conftest import DIM, clustered, unit

pytestmark = pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="faiss sees no GPU")
POLICY = ThresholdPolicy(None)


def run(path, use_gpu: bool, rng_seed: int = 3):
    rng = np.random.default_rng(rng_seed)
    x, labels = clustered(rng, 40, 10)
    q = unit(x[::9] + 0.2 * rng.normal(size=x[::9].shape).astype(np.float32))
    settings = StoreSettings(use_gpu=use_gpu, synchronous="OFF", index=IndexParams(ivf_min_train=200),
                             limits=SearchLimits(compact_min_dead=10))
    out = {}
    with GalleryStore.open(path, settings) as store:
        for kind in (IndexKind.EXACT, IndexKind.IVF, IndexKind.HNSW):
            spec = IndexSpec(kind=kind, nprobe=10_000 if kind == IndexKind.IVF else 0)
            store.create_gallery(kind.value, fingerprint="m", dim=DIM, index=spec)
            got = store.enroll(kind.value, labels, x)
            store.delete_items(kind.value, ids=[e.id for e in got[:50]])  # compaction on the GPU too
            info = store.get_gallery(kind.value)
            assert info.on_gpu == (use_gpu and kind != IndexKind.HNSW)
            out[kind] = [
                [[n.id - got[0].id for n in row] for row in store.search(kind.value, q, k=5)],
                [[c.label for c in r.candidates]
                 for r in store.identify(kind.value, q, policy=POLICY, k=3, scoring=Scoring.MEAN_OF_K,
                                         threshold=1.0)],
            ]
    with GalleryStore.open(path, settings) as store:  # snapshot written from the GPU, loaded back onto it
        assert set(store.load_report.values()) == {"snapshot"}
        out["reopened"] = [[n.id for n in row] for row in store.search("exact", q, k=5)]
    return out


def test_gpu_answers_match_cpu(tmp_path):
    cpu = run(tmp_path / "cpu", use_gpu=False)
    gpu = run(tmp_path / "gpu", use_gpu=True)
    assert cpu[IndexKind.EXACT] == gpu[IndexKind.EXACT]
    assert cpu[IndexKind.IVF] == gpu[IndexKind.IVF]  # nprobe = nlist: exhaustive, so exact
    assert cpu[IndexKind.HNSW][1] == gpu[IndexKind.HNSW][1]
