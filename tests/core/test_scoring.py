"""Every scoring mode against a brute-force numpy ranking on seeded data (exact indexes)."""

from __future__ import annotations

import numpy as np
import pytest

from twinsearch.client.types import IndexKind, IndexSpec, Scoring
from twinsearch.server.thresholds import ThresholdPolicy

from .conftest import DIM, brute_rank, clustered, unit

POLICY = ThresholdPolicy(None)


def check_against_brute(store, name, queries, x, labels, scoring, mean_k, k, restrict=None):
    got = store.identify(name, queries, policy=POLICY, k=k, scoring=scoring, mean_k=mean_k,
                         labels=restrict, threshold=0.8)
    for q, ident in zip(queries, got, strict=True):
        want = brute_rank(q, x, labels, scoring, mean_k, k, restrict)
        assert [c.label for c in ident.candidates] == [w[0] for w in want]
        np.testing.assert_allclose([c.distance for c in ident.candidates], [w[1] for w in want], atol=2e-4)
        if len(want) >= 2:
            assert ident.margin == pytest.approx(want[1][1] - want[0][1], abs=4e-4)
        assert ident.label == (want[0][0] if want[0][1] <= 0.8 else None)


@pytest.mark.parametrize("scoring", list(Scoring))
def test_every_scoring_mode_matches_brute_force(store, rng, scoring):
    x, labels = clustered(rng, 40, rng.integers(1, 12, size=40))
    store.create_gallery("g", fingerprint="m", dim=DIM)
    store.enroll("g", labels, x)
    queries = unit(x[rng.choice(len(x), 25)] + 0.3 * rng.normal(size=(25, DIM)).astype(np.float32))
    check_against_brute(store, "g", queries, x, labels, scoring, 3, 7)
    # per-query mean_k and a label restriction
    restrict = sorted(set(labels))[::3]
    check_against_brute(store, "g", queries, x, labels, scoring, 5, 4, restrict)


@pytest.mark.parametrize("scoring", list(Scoring))
def test_a_class_of_1000_exemplars_does_not_crowd_others_out(store, rng, scoring):
    big = unit(np.tile(rng.normal(size=(1, DIM)), (1000, 1)) + 0.05 * rng.normal(size=(1000, DIM)))
    others, other_labels = clustered(rng, 30, 3)
    x = np.concatenate([big, others]).astype(np.float32)
    labels = ["big"] * 1000 + other_labels
    store.create_gallery("g", fingerprint="m", dim=DIM)
    for lo in range(0, len(x), 400):  # several batches
        store.enroll("g", labels[lo:lo + 400], x[lo:lo + 400])
    queries = unit(big[:5] + 0.02 * rng.normal(size=(5, DIM)))
    check_against_brute(store, "g", queries, x, labels, scoring, 3, 5)


@pytest.mark.parametrize("scoring", list(Scoring))
def test_rankings_stay_exact_after_deletions(store, rng, scoring):
    x, labels = clustered(rng, 25, 8)
    store.create_gallery("g", fingerprint="m", dim=DIM)
    got = store.enroll("g", labels, x)
    # delete a third of the items and two whole classes: tombstones must not show or skew
    gone = [e.id for e in got[::3]]
    store.delete_items("g", ids=gone)
    store.delete_class("g", "class-004")
    store.delete_class("g", "class-011")
    keep = [i for i, e in enumerate(got) if e.id not in set(gone) and e.label not in ("class-004", "class-011")]
    xk, lk = x[keep], [labels[i] for i in keep]
    queries = unit(x[:10] + 0.2 * rng.normal(size=(10, DIM)).astype(np.float32))
    check_against_brute(store, "g", queries, xk, lk, scoring, 3, 6)


@pytest.mark.parametrize("kind", list(IndexKind))
def test_compaction_keeps_answers(tmp_path, rng, kind):
    from twinsearch.server.gallery import SearchLimits
    from twinsearch.server.index import IndexParams
    from twinsearch.server.store import GalleryStore, StoreSettings

    settings = StoreSettings(synchronous="OFF", index=IndexParams(ivf_min_train=100),
                             limits=SearchLimits(compact_min_dead=10, compact_dead_fraction=0.1))
    with GalleryStore.open(tmp_path / "s", settings) as store:
        x, labels = clustered(rng, 20, 10)
        # IVF with nprobe above nlist searches every cell: exact, so it can be checked against brute force
        store.create_gallery("g", fingerprint="m", dim=DIM, index=IndexSpec(kind=kind, nprobe=10_000))
        got = store.enroll("g", labels, x)
        store.delete_items("g", ids=[e.id for e in got[:60]])
        gallery = store._galleries["g"]
        assert gallery.index.ntotal == len(x) - 60  # compacted, not tombstoned
        assert kind != IndexKind.IVF or gallery.index.is_ivf
        queries = unit(x[100:110] + 0.1 * rng.normal(size=(10, DIM)).astype(np.float32))
        if kind == IndexKind.HNSW:
            res = store.identify("g", x[100:110], policy=POLICY, k=1, threshold=0.5)
            assert [r.label for r in res] == labels[100:110]
        else:
            check_against_brute(store, "g", queries, x[60:], labels[60:], Scoring.NEAREST, 3, 5)
        hits = store.search("g", x[60:70], k=1)
        assert [row[0].id for row in hits] == [e.id for e in got[60:70]]


def test_search_matches_brute_force_and_returns_metadata(store, rng):
    x, labels = clustered(rng, 10, 10)
    store.create_gallery("g", fingerprint="m", dim=DIM)
    got = store.enroll("g", labels, x, client_ids=[f"c{i}" for i in range(len(x))],
                       metadata=[{"i": str(i)} for i in range(len(x))])
    store.delete_items("g", ids=[got[0].id, got[5].id])
    alive = np.array([i for i in range(len(x)) if i not in (0, 5)])
    q = unit(x[:4] + 0.1 * rng.normal(size=(4, DIM)).astype(np.float32))
    res = store.search("g", q, k=6)
    for qi, row in enumerate(res):
        d = np.linalg.norm(x[alive] - q[qi], axis=1)
        order = alive[np.argsort(d)[:6]]
        assert [n.id for n in row] == [got[i].id for i in order]
        np.testing.assert_allclose([n.distance for n in row], np.sort(d)[:6], atol=1e-4)
        assert all(n.metadata == {"i": n.client_id[1:]} and n.label == labels[int(n.client_id[1:])] for n in row)
    only = store.search("g", q, k=3, labels=["class-002"])
    assert all(n.label == "class-002" for row in only for n in row)


@pytest.mark.parametrize("scoring", list(Scoring))
def test_verify_class_uses_the_class_distance(store, rng, scoring):
    x, labels = clustered(rng, 12, 6)
    store.create_gallery("g", fingerprint="m", dim=DIM, scoring=scoring, mean_k=2, threshold=0.7)
    store.enroll("g", labels, x)
    q = unit(x[:6] + 0.2 * rng.normal(size=(6, DIM)).astype(np.float32))
    claims = ["class-000", "class-003", "class-000", "class-007", "class-011", "class-000"]
    res = store.verify_class("g", q, claims, policy=POLICY)
    for qi, (v, claim) in enumerate(zip(res, claims, strict=True)):
        (want,) = brute_rank(q[qi], x, labels, scoring, 2, 1, [claim])
        assert v.distance == pytest.approx(want[1], abs=2e-4)
        assert v.same == (want[1] <= 0.7)
        assert v.threshold.distance == 0.7


def test_prototypes_follow_enroll_and_delete(store, rng):
    x, labels = clustered(rng, 5, 20)
    store.create_gallery("g", fingerprint="m", dim=DIM, scoring=Scoring.PROTOTYPE)
    got = store.enroll("g", labels[:50], x[:50])
    store.enroll("g", labels[50:], x[50:])
    store.delete_items("g", ids=[e.id for e in got[10:30]])
    keep = list(range(10)) + list(range(30, 100))
    q = unit(rng.normal(size=(8, DIM)))
    check_against_brute(store, "g", q, x[keep], [labels[i] for i in keep], Scoring.PROTOTYPE, 3, 5)


def test_hnsw_and_ivf_galleries_answer_too(store, rng):
    x, labels = clustered(rng, 30, 10)
    for kind in (IndexKind.IVF, IndexKind.HNSW):
        store.create_gallery(kind.value, fingerprint="m", dim=DIM, index=IndexSpec(kind=kind))
        store.enroll(kind.value, labels, x)
        res = store.identify(kind.value, x[:5], policy=POLICY, k=3, threshold=0.5)
        assert [r.label for r in res] == labels[:5]


@pytest.mark.parametrize("kind", [IndexKind.IVF, IndexKind.HNSW])
@pytest.mark.parametrize("scoring", list(Scoring))
def test_label_restriction_is_exact_on_approximate_galleries(tmp_path, rng, kind, scoring):
    from twinsearch.server.index import IndexParams
    from twinsearch.server.store import GalleryStore, StoreSettings

    settings = StoreSettings(synchronous="OFF", index=IndexParams(ivf_min_train=100))
    with GalleryStore.open(tmp_path, settings) as store:
        x, labels = clustered(rng, 30, 8)
        store.create_gallery("g", fingerprint="m", dim=DIM, index=IndexSpec(kind=kind, nprobe=1))
        store.enroll("g", labels, x)
        queries = unit(x[::25] + 0.3 * rng.normal(size=x[::25].shape).astype(np.float32))
        restrict = sorted(set(labels))[1::4]
        check_against_brute(store, "g", queries, x, labels, scoring, 3, 5, restrict)
