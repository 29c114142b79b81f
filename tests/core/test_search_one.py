"""A lone query against a flat CPU index takes a matrix-vector product instead of FAISS's one-thread kernel,
and a batch of queries FAISS's kernel given the rows' kept norms: both must find what FAISS finds, pad
the same way, and follow the index through compaction and snapshots."""

from __future__ import annotations

import numpy as np

from twinsearch.client.types import IndexSpec
from twinsearch.server.index import IndexParams, VectorIndex
from twinsearch.server.scoring import F32_EPS

from .conftest import DIM, unit


def _index(vectors: np.ndarray, first_id: int = 1) -> VectorIndex:
    index = VectorIndex(DIM, IndexSpec(), IndexParams(), gpu=None)
    index.add(vectors, np.arange(first_id, first_id + len(vectors), dtype=np.int64))
    return index


def _faiss(index: VectorIndex, query: np.ndarray, depth: int):
    """FAISS's own answer for one query (its SIMD kernel), bypassing the product."""
    return index.index.search(np.ascontiguousarray(query[None], dtype=np.float32), depth)


def _same(index: VectorIndex, queries: np.ndarray, depth: int, monkeypatch) -> None:
    calls = []
    product = VectorIndex._search_one
    monkeypatch.setattr(VectorIndex, "_search_one", lambda self, *a: calls.append(1) or product(self, *a))
    slack = (2 * DIM + 16) * F32_EPS * (1.0 + 4.0)  # unseen_bound's slack: |q| = 1, |x| <= 2
    for q in queries:
        dist, ids = index.search(q[None], depth)
        want_dist, want_ids = _faiss(index, q, depth)
        assert dist.shape == ids.shape == (1, depth)
        assert dist.dtype == np.float32 and ids.dtype == np.int64
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(dist, want_dist, rtol=0, atol=slack)
    assert len(calls) == len(queries), "a lone query on a flat CPU index must take the product"


def test_a_lone_query_finds_what_faiss_finds(rng, monkeypatch):
    x = unit(rng.normal(size=(3000, DIM)))
    index = _index(x)
    queries = unit(x[rng.choice(len(x), 25)] + 0.05 * rng.normal(size=(25, DIM)))
    _same(index, queries, 40, monkeypatch)


def test_a_search_deeper_than_the_index_pads_like_faiss(rng, monkeypatch):
    index = _index(unit(rng.normal(size=(7, DIM))))
    dist, ids = index.search(unit(rng.normal(size=(1, DIM))), 50)  # max_depth clips it to 7
    assert ids.shape == (1, 7) and (ids >= 1).all()
    raw_dist, raw_ids = index._search_one(index._flat_cpu_rows(), unit(rng.normal(size=(1, DIM)))[0], 10)
    assert (raw_ids[0, 7:] == -1).all() and (raw_dist[0, 7:] == np.finfo(np.float32).max).all()
    assert np.all(np.diff(raw_dist[0, :7]) >= 0)


def _scaled(rng, n: int) -> np.ndarray:
    """Vectors of norms between 0.5 and 2, so that stale norms would change the answers."""
    return unit(rng.normal(size=(n, DIM))) * rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)


def test_norms_follow_compaction_and_later_additions(rng, monkeypatch):
    x = _scaled(rng, 500)
    index = _index(x)
    q = unit(rng.normal(size=(4, DIM)))
    _same(index, q, 20, monkeypatch)  # the norms are now kept
    index.compact(np.arange(1, 101, dtype=np.int64))  # the first 100 rows go; the rest move up
    index.add(_scaled(rng, 150), np.arange(1000, 1150, dtype=np.int64))  # longer than before
    monkeypatch.undo()
    _same(index, np.concatenate([q, unit(x[200:204])]), 20, monkeypatch)


def test_snapshots_reload_with_fresh_norms(tmp_path, rng, monkeypatch):
    index = _index(_scaled(rng, 300))
    q = unit(rng.normal(size=(3, DIM)))
    _same(index, q, 10, monkeypatch)
    other = _index(_scaled(rng, 400), first_id=5000)
    other.serialize_to(str(tmp_path / "snap.faiss"))
    index.load_from(str(tmp_path / "snap.faiss"), nlist=0, trained_at=0)
    monkeypatch.undo()
    _same(index, q, 10, monkeypatch)
    assert (index.search(q[:1], 10)[1] >= 5000).all()


def _same_batch(index: VectorIndex, queries: np.ndarray, depth: int, monkeypatch) -> None:
    """A batch answers exactly what FAISS's IndexFlatL2.search answers (the same kernel, the same norms)."""
    calls = []
    kernel = VectorIndex._search_flat
    monkeypatch.setattr(VectorIndex, "_search_flat", lambda self, *a: calls.append(1) or kernel(self, *a))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    dist, ids = index.search(queries, depth)
    want_dist, want_ids = index.index.search(queries, min(depth, index.ntotal))
    assert dist.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(dist, want_dist)
    assert calls == [1], "a batch on a flat CPU index must take the kernel with kept norms"
    monkeypatch.undo()


def test_batches_find_what_faiss_finds_through_compaction_additions_and_snapshots(tmp_path, rng, monkeypatch):
    x = _scaled(rng, 600)
    index = _index(x)
    for n in (2, 30):  # below and above FAISS's BLAS threshold
        _same_batch(index, unit(rng.normal(size=(n, DIM))), 25, monkeypatch)
    index.compact(np.arange(1, 151, dtype=np.int64))  # rows move up: kept norms would be stale
    index.add(_scaled(rng, 200), np.arange(2000, 2200, dtype=np.int64))
    _same_batch(index, np.concatenate([unit(rng.normal(size=(20, DIM))), x[300:310]]), 25, monkeypatch)
    other = _index(_scaled(rng, 50), first_id=9000)
    other.serialize_to(str(tmp_path / "snap.faiss"))
    index.load_from(str(tmp_path / "snap.faiss"), nlist=0, trained_at=0)
    _same_batch(index, unit(rng.normal(size=(12, DIM))), 80, monkeypatch)  # deeper than the index: clipped
    assert (index.search(unit(rng.normal(size=(3, DIM))), 10)[1] >= 9000).all()


def test_other_kinds_keep_faiss(rng, monkeypatch):
    from twinsearch.client.types import IndexKind

    called = []
    monkeypatch.setattr(VectorIndex, "_search_one", lambda *a: called.append(1))
    monkeypatch.setattr(VectorIndex, "_search_flat", lambda *a: called.append(2))
    x = unit(rng.normal(size=(200, DIM)))
    hnsw = VectorIndex(DIM, IndexSpec(kind=IndexKind.HNSW), IndexParams(), gpu=None)
    hnsw.add(x, np.arange(1, 201, dtype=np.int64))
    hnsw.search(x[:1], 5)
    hnsw.search(x[:4], 5)
    assert not called


def test_long_indexes_pick_the_nearest_from_a_sampled_threshold(rng, monkeypatch):
    """Past SAMPLED_SELECTION_ROWS the nearest rows come from a threshold drawn from a sample: the same
    answer as FAISS, for queries near the rows and far from all of them, and with the sample too sparse
    to hold enough rows under its threshold (many rows at one distance)."""
    from twinsearch.server import index as index_module

    monkeypatch.setattr(index_module, "SAMPLED_SELECTION_ROWS", 2_000)
    x = _scaled(rng, 6_000)
    index = _index(x)
    near = unit(x[rng.choice(len(x), 10)] + 0.02 * rng.normal(size=(10, DIM)))
    _same(index, np.concatenate([near, unit(rng.normal(size=(10, DIM)))]), 64, monkeypatch)
    key = np.ones(50_000, dtype=np.float32)  # one distance everywhere: nothing lies under the threshold
    key[[7, 40_000, 123]] = [0.5, 0.25, 0.5]
    got = index_module._nearest_positions(key, 5)
    np.testing.assert_array_equal(got[:3], [40_000, 7, 123])  # by value, then by position
    assert (key[got[3:]] == 1.0).all() and got[3] < got[4]  # which tied rows fill the rest is not specified
    spread = rng.permutation(50_000).astype(np.float32)
    np.testing.assert_array_equal(index_module._nearest_positions(spread, 32), np.argsort(spread)[:32])
