"""Reported distances are exact float64 recomputations: the same bits alone or in any batch.

FAISS's float32 distances drift with the batch a query shares (its BLAS path, taken from 64 queries
on, computes |x|^2 + |y|^2 - 2<x, y>: an item against itself comes out near 3e-4, not 0). The store
uses them only to pick candidates; these tests hold it to the exact answer, defined by
`scoring.exact_distances` and `scoring.class_distance`, ranked by (distance, id) for items and
(distance, first enrollment of the label) for classes.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from twinsearch.client.types import IndexKind, IndexSpec, Scoring
from twinsearch.server.index import IndexParams
from twinsearch.server.scoring import class_distance, exact_distances, rank_prototypes
from twinsearch.server.store import GalleryStore, StoreSettings
from twinsearch.server.thresholds import ThresholdPolicy

from .conftest import DIM, clustered, unit

POLICY = ThresholdPolicy(None)
SETTINGS = StoreSettings(synchronous="OFF", index=IndexParams(ivf_min_train=200))
# IVF probing every cell is exhaustive, so which cells a batch probes cannot change its candidates.
SPECS = {IndexKind.EXACT: IndexSpec(), IndexKind.IVF: IndexSpec(kind=IndexKind.IVF, nprobe=10_000),
         IndexKind.HNSW: IndexSpec(kind=IndexKind.HNSW, ef_search=256)}


def test_exact_distances_are_row_independent_and_zero_on_identity(rng):
    q = unit(rng.normal(size=(300, DIM)))
    v = unit(rng.normal(size=(300, DIM)))
    both = exact_distances(q, v)
    assert both.dtype == np.float64
    np.testing.assert_allclose(both, np.linalg.norm(q.astype(np.float64) - v, axis=1), rtol=1e-14)
    assert [exact_distances(q[i], v[i]) for i in range(0, 300, 7)] == list(both[::7])  # bits, not approx
    assert (exact_distances(q[:, None, :], v[None, :5, :])[:, 3] == exact_distances(q, v[3])).all()
    assert (exact_distances(v, v) == 0.0).all()
    for dim in (1, 2, 3, 5, 7, 128):  # the halving tree for odd and even widths
        a, b = rng.normal(size=(4, dim)).astype(np.float32), rng.normal(size=(4, dim)).astype(np.float32)
        np.testing.assert_allclose(exact_distances(a, b), np.linalg.norm(a.astype(np.float64) - b, axis=1),
                                   rtol=1e-14)


def test_class_distance_sums_like_the_ranking(rng):
    d = rng.uniform(0, 2, 50)
    for m in (1, 3, 7, 50, 80):
        want = 0.0
        for x in np.sort(d)[:min(m, 50)]:
            want += x
        assert class_distance(d, m) == want / min(m, 50)


def test_prototype_ranks_do_not_depend_on_the_batch(rng):
    means = rng.normal(size=(500, DIM)).astype(np.float32)
    slots = np.arange(500, dtype=np.int64)
    q = unit(rng.normal(size=(200, DIM)))
    q[:3] = unit(means[:3])
    s_all, d_all = rank_prototypes(q, means, slots, 5)
    for i in (0, 1, 2, 77, 199):
        s_one, d_one = rank_prototypes(q[i:i + 1], means, slots, 5)
        assert (s_one[0] == s_all[i]).all() and (d_one[0] == d_all[i]).all()
    protos = means.astype(np.float64) / np.linalg.norm(means.astype(np.float64), axis=1, keepdims=True)
    ref = np.linalg.norm(q[:, None, :].astype(np.float64) - protos[None], axis=2)
    np.testing.assert_allclose(d_all, np.sort(ref, axis=1)[:, :5], atol=1e-12)
    assert (s_all[:3, 0] == [0, 1, 2]).all()


def _everything(store, name, q, claims):
    out = {"search": [[(n.id, n.distance) for n in row] for row in store.search(name, q, k=7)]}
    for scoring in Scoring:
        res = store.identify(name, q, policy=POLICY, k=4, scoring=scoring, mean_k=3, threshold=0.5)
        out[scoring] = [[(c.label, c.distance, c.nearest_ids) for c in r.candidates] for r in res]
        out[f"verify-{scoring}"] = [v.distance for v in store.verify_class(name, q, claims, policy=POLICY,
                                                                          scoring=scoring, mean_k=3, threshold=0.5)]
    return out


@pytest.mark.parametrize("kind", list(IndexKind))
def test_a_query_alone_and_in_a_batch_gets_the_same_bits(tmp_path, rng, kind):
    x, labels = clustered(rng, 60, 20)
    q = unit(x[::6] + 0.05 * rng.normal(size=x[::6].shape).astype(np.float32))  # 200 queries
    q[:10] = x[:60:6]  # enrolled items themselves
    claims = [labels[i] for i in range(0, len(x), 6)]
    with GalleryStore.open(tmp_path / "s", SETTINGS) as store:
        store.create_gallery("g", fingerprint="m", dim=DIM, index=SPECS[kind])
        got = store.enroll("g", labels, x)
        batch = _everything(store, "g", q, claims)
        for i in (0, 3, 9, 10, 57, 199):
            alone = _everything(store, "g", q[i:i + 1], claims[i:i + 1])
            for key, rows in batch.items():
                assert alone[key][0] == rows[i], (key, i)
        for i in range(10):  # an item against itself: exactly 0, in a batch where FAISS gives ~3e-4
            assert batch["search"][i][0] == (got[6 * i].id, 0.0)
            assert batch[Scoring.NEAREST][i][0][:2] == (labels[6 * i], 0.0)
            assert batch[f"verify-{Scoring.NEAREST}"][i] == 0.0


def test_faiss_alone_drifts_with_the_batch(rng, monkeypatch):
    """The premise: raw FAISS float32 distances of the same pair differ between batch sizes."""
    # FAISS's own kernel choice (its default threshold, 20): the store sets a lower process-wide one.
    monkeypatch.setattr(faiss.cvar, "distance_compute_blas_threshold", 20)
    x, _ = clustered(rng, 60, 20)
    index = faiss.IndexFlatL2(DIM)
    index.add(x)
    batch, _ = index.search(x[:200], 1)  # 200 queries >= blas threshold: norms and BLAS
    alone = np.array([index.search(x[i:i + 1], 1)[0][0, 0] for i in range(200)])
    assert (alone == 0).all()
    assert (batch[:, 0] != alone).any()  # on this data the BLAS path does not give 0 for every item


def _near_ties(rng, n_items=600, n_classes=120):
    """Items whose distances to q differ by about 1e-8: far below float32's resolution."""
    q = unit(rng.normal(size=(1, DIM)))[0]
    u = rng.normal(size=(n_items, DIM))
    u -= np.outer(u @ q, q)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    t = 0.6 + 1e-8 * rng.permutation(n_items)
    x = (np.cos(t)[:, None] * q + np.sin(t)[:, None] * u).astype(np.float32)
    labels = [f"c{i % n_classes:03d}" for i in range(n_items)]
    return q, x, labels


def test_near_ties_are_ranked_by_the_exact_distance(tmp_path, rng):
    q, x, labels = _near_ties(rng)
    far = unit(rng.normal(size=(400, DIM)))
    queries = np.concatenate([q[None], far[:100]]).astype(np.float32)  # q inside a BLAS-sized batch
    with GalleryStore.open(tmp_path / "s", SETTINGS) as store:
        store.create_gallery("g", fingerprint="m", dim=DIM)
        ids = np.array([e.id for e in store.enroll("g", labels, x)])
        d = exact_distances(q, x)
        want = np.lexsort((ids, d))[:8]
        for probe in (queries, queries[:1]):
            row = store.search("g", probe, k=8)[0]
            assert [(n.id, n.distance) for n in row] == [(int(ids[i]), float(d[i])) for i in want]
        names = sorted(set(labels))  # enrolled first in this order: slot order
        for scoring, mean_k in ((Scoring.NEAREST, 1), (Scoring.MEAN_OF_K, 3)):
            lab = np.array(labels)
            scores = [class_distance(d[lab == name], mean_k) for name in names]
            order = sorted(range(len(names)), key=lambda c: (scores[c], c))[:6]
            for probe in (queries, queries[:1]):
                r = store.identify("g", probe, policy=POLICY, k=6, scoring=scoring, mean_k=mean_k,
                                   threshold=0.5)[0]
                assert [(c.label, c.distance) for c in r.candidates] == [(names[c], scores[c]) for c in order]


@pytest.mark.parametrize("kind", list(IndexKind))
def test_vectors_come_from_the_index_and_survive_compaction_and_snapshots(tmp_path, rng, kind):
    from twinsearch.server.gallery import SearchLimits

    settings = StoreSettings(synchronous="OFF", index=IndexParams(ivf_min_train=200),
                             limits=SearchLimits(compact_min_dead=10, compact_dead_fraction=0.05))
    x, labels = clustered(rng, 30, 20)
    q = unit(x[::7] + 0.1 * rng.normal(size=x[::7].shape).astype(np.float32))
    with GalleryStore.open(tmp_path / "s", settings) as store:
        store.create_gallery("g", fingerprint="m", dim=DIM, index=SPECS[kind])
        got = store.enroll("g", labels[:300], x[:300])
        got += store.enroll("g", labels[300:], x[300:])
        store.delete_items("g", ids=[e.id for e in got[::15]])  # 40 items, no whole class
        g = store._galleries["g"]
        assert g.index.ntotal == len(x) - 40  # compacted (flat in place, the others rebuilt)
        if kind == IndexKind.IVF:
            assert g.index.is_ivf
            assert faiss.extract_index_ivf(g.index.index).direct_map.type == faiss.DirectMap.Array
        keep = np.array([i for i in range(len(x)) if i % 15])
        live = np.array([got[i].id for i in keep])
        assert (g.index.vectors(live) == x[keep]).all()
        assert g.index.max_sq_norm == pytest.approx(float((x.astype(np.float64) ** 2).sum(1).max()))
        before = _everything(store, "g", q, labels[::7])
    with GalleryStore.open(tmp_path / "s", settings) as store:
        assert store.load_report["g"] == "snapshot"
        g = store._galleries["g"]
        assert (g.index.vectors(live) == x[keep]).all()
        assert g.index.max_sq_norm == pytest.approx(float((x[keep].astype(np.float64) ** 2).sum(1).max()))
        assert _everything(store, "g", q, labels[::7]) == before


def test_sqlite_gives_the_same_answers_where_the_index_cannot(tmp_path, rng, monkeypatch):
    """A GPU IVF index cannot reconstruct by position: the store reads the vectors from SQLite."""
    x, labels = clustered(rng, 30, 20)
    q = unit(x[::7] + 0.1 * rng.normal(size=x[::7].shape).astype(np.float32))
    with GalleryStore.open(tmp_path / "s", SETTINGS) as store:
        store.create_gallery("g", fingerprint="m", dim=DIM, index=SPECS[IndexKind.IVF])
        store.enroll("g", labels, x)
        before = _everything(store, "g", q, labels[::7])
        index = store._galleries["g"].index
        monkeypatch.setattr(index, "vectors", lambda ids, copy_ok=False: None)
        assert _everything(store, "g", q, labels[::7]) == before
