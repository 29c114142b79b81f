"""The store's API: galleries, enroll idempotence, deletes, pagination, and input validation."""

from __future__ import annotations

import numpy as np
import pytest

from twinsearch.client.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from twinsearch.client.types import ClassCount, IndexKind, IndexSpec, Scoring
from twinsearch.server.store import GalleryStore, StoreSettings
from twinsearch.server.thresholds import ThresholdPolicy

from .conftest import DIM, clustered, unit

POLICY = ThresholdPolicy(None)


@pytest.fixture
def filled(store, rng):
    x, labels = clustered(rng, 6, 5)
    store.create_gallery("staff", fingerprint="m1", dim=DIM)
    got = store.enroll("staff", labels, x, client_ids=[f"cid{i}" for i in range(len(x))])
    return store, x, labels, got


def test_gallery_lifecycle(store):
    info = store.create_gallery("a", fingerprint="m1", dim=DIM, index=IndexSpec(kind=IndexKind.HNSW),
                                scoring=Scoring.MEAN_OF_K, mean_k=4, threshold=0.9)
    assert (info.name, info.dim, info.index.kind, info.scoring, info.mean_k, info.threshold) == (
        "a", DIM, IndexKind.HNSW, Scoring.MEAN_OF_K, 4, 0.9)
    assert info.item_count == 0 and not info.on_gpu
    store.create_gallery("b", fingerprint="m1", dim=8)
    assert [g.name for g in store.list_galleries()] == ["a", "b"]
    with pytest.raises(AlreadyExists):
        store.create_gallery("a", fingerprint="m1", dim=DIM)
    store.enroll("b", ["x", "y"], unit(np.eye(2, 8)))
    assert store.delete_gallery("b") == 2
    with pytest.raises(NotFound):
        store.get_gallery("b")
    with pytest.raises(NotFound):
        store.delete_gallery("b")


@pytest.mark.parametrize("kwargs", [
    {"name": ""}, {"name": "has space"}, {"name": "x" * 65}, {"dim": 0}, {"fingerprint": ""},
    {"mean_k": 0}, {"threshold": float("nan")}, {"threshold": -0.1},
    {"index": IndexSpec(kind=IndexKind.IVF, nlist=4, nprobe=8)}, {"index": IndexSpec(hnsw_m=1)},
])
def test_create_gallery_refuses_bad_settings(store, kwargs):
    args = {"name": "g", "fingerprint": "m", "dim": DIM, **kwargs}
    with pytest.raises(InvalidArgument):
        store.create_gallery(args.pop("name"), **args)


def test_enroll_is_idempotent_by_client_id(filled):
    store, x, labels, got = filled
    assert all(e.created for e in got) and [e.label for e in got] == labels
    again = store.enroll("staff", ["other", "new"], x[:2], client_ids=["cid0", "fresh"])
    assert again[0].id == got[0].id and not again[0].created and again[0].label == labels[0]
    assert again[1].created and again[1].id > got[-1].id
    assert store.get_gallery("staff").item_count == len(x) + 1


def test_enroll_validation_names_the_item(filled):
    store, x, labels, _ = filled
    bad = x[:4].copy()
    bad[3, 2] = np.nan
    with pytest.raises(InvalidArgument, match="item 3"):
        store.enroll("staff", labels[:4], bad)
    with pytest.raises(InvalidArgument, match="64 dimensions, gallery 'staff' expects 16"):
        store.enroll("staff", ["a"], np.ones((1, 64), np.float32))
    with pytest.raises(InvalidArgument, match="2-D"):
        store.enroll("staff", ["a"], np.ones(DIM, np.float32))
    with pytest.raises(InvalidArgument, match="item 1: empty label"):
        store.enroll("staff", ["a", " "], x[:2])
    with pytest.raises(InvalidArgument, match="labels for"):
        store.enroll("staff", ["a"], x[:2])
    with pytest.raises(InvalidArgument, match="repeats item 0"):
        store.enroll("staff", ["a", "b"], x[:2], client_ids=["same", "same"])
    with pytest.raises(InvalidArgument, match="metadata"):
        store.enroll("staff", ["a"], x[:1], metadata=[{"k": 1}])
    with pytest.raises(FailedPrecondition, match="m2"):
        store.enroll("staff", ["a"], x[:1], fingerprint="m2")
    with pytest.raises(NotFound):
        store.enroll("nope", ["a"], x[:1])
    assert store.get_gallery("staff").item_count == len(x)  # nothing half-stored


def test_limits(tmp_path):
    with GalleryStore.open(tmp_path, StoreSettings(max_batch=3, max_items=5, max_k=10, max_queries=2)) as s:
        s.create_gallery("g", fingerprint="m", dim=2)
        v = unit(np.random.default_rng(0).normal(size=(4, 2)))
        with pytest.raises(ResourceExhausted):
            s.enroll("g", list("abcd"), v)
        s.enroll("g", list("abc"), v[:3])
        with pytest.raises(ResourceExhausted):
            s.enroll("g", list("abc"), v[:3])
        with pytest.raises(InvalidArgument):
            s.search("g", v[:1], k=11)
        with pytest.raises(ResourceExhausted):
            s.search("g", v[:3], k=1)


def test_query_validation(filled):
    store, x, _, _ = filled
    for k in (0, -1, 1001, 2.5, True):
        with pytest.raises(InvalidArgument):
            store.search("staff", x[:1], k=k)
    with pytest.raises(InvalidArgument, match="item 0"):
        store.identify("staff", np.full((1, DIM), np.inf, np.float32), policy=POLICY, threshold=1)
    with pytest.raises(InvalidArgument):
        store.identify("staff", x[:1, :8], policy=POLICY, threshold=1)
    with pytest.raises(NotFound, match="no class 'ghost'"):
        store.identify("staff", x[:1], policy=POLICY, threshold=1, labels=["ghost"])
    with pytest.raises(NotFound, match="ghost"):
        store.verify_class("staff", x[:1], ["ghost"], policy=POLICY, threshold=1)
    with pytest.raises(FailedPrecondition):
        store.search("staff", x[:1], k=1, fingerprint="other")
    with pytest.raises(FailedPrecondition, match="threshold"):
        store.identify("staff", x[:1], policy=POLICY)  # no calibration, no override, no request value
    with pytest.raises(InvalidArgument):
        store.identify("staff", x[:1], policy=POLICY, scoring="bogus", threshold=1)
    store.create_gallery("empty", fingerprint="m1", dim=DIM)
    with pytest.raises(FailedPrecondition, match="is empty: enroll images into it first"):
        store.identify("empty", x[:1], policy=POLICY, threshold=1)


def test_deletes(filled):
    store, x, labels, got = filled
    # unknown ids are not an error (the API contract): they count for nothing
    assert store.delete_items("staff", ids=[999_999], client_ids=["nope"]) == 0
    with pytest.raises(InvalidArgument):
        store.delete_items("staff")
    assert store.get_gallery("staff").item_count == len(x)
    assert store.delete_items("staff", ids=[got[0].id, 999_999], client_ids=["cid0", "cid1", "nope"]) == 2
    assert store.delete_items("staff", ids=[got[0].id]) == 0  # a re-sent delete is harmless
    with pytest.raises(NotFound):
        store.delete_class("staff", "ghost")
    assert store.delete_class("staff", labels[10]) == 5
    info = store.get_gallery("staff")
    assert (info.item_count, info.class_count) == (len(x) - 7, 5)
    hits = store.search("staff", x[:12], k=30)
    assert all(n.label != labels[10] and n.id not in (got[0].id, got[1].id) for row in hits for n in row)
    # a deleted client id can be enrolled again, as a new item
    again = store.enroll("staff", ["back"], x[:1], client_ids=["cid0"])
    assert again[0].created and again[0].id != got[0].id


def test_list_classes_paginates(store, rng):
    x, labels = clustered(rng, 23, 2)
    store.create_gallery("g", fingerprint="m", dim=DIM)
    store.enroll("g", labels, x)
    seen, token = [], ""
    while True:
        page = store.list_classes("g", page_size=5, page_token=token)
        seen += page.classes
        token = page.next_page_token
        if not token:
            break
    assert seen == [ClassCount(f"class-{c:03d}", 2) for c in range(23)]
    with pytest.raises(InvalidArgument):
        store.list_classes("g", page_token="!!not base64!!")
    with pytest.raises(InvalidArgument):
        store.list_classes("g", page_size=0)


def test_second_process_cannot_open_the_same_store(tmp_path):
    with GalleryStore.open(tmp_path):
        with pytest.raises(FailedPrecondition, match="already open .*: stop the other server, or choose another"):
            GalleryStore.open(tmp_path)


def test_use_gpu_without_a_gpu_is_refused(tmp_path):
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(FailedPrecondition, match="GPU"):
        GalleryStore.open(tmp_path, StoreSettings(use_gpu=True))


def test_an_empty_gallery_loads_without_a_recovery_warning(tmp_path, rng, caplog):
    x, labels = clustered(rng, 2, 3)
    with GalleryStore.open(tmp_path) as s:
        s.create_gallery("empty", fingerprint="m1", dim=DIM)
        s.create_gallery("full", fingerprint="m1", dim=DIM)
        s.enroll("full", labels, x)
    for path in (tmp_path / "snapshots").glob("*"):  # lost snapshots: only the filled gallery has data to rebuild
        path.unlink()
    with caplog.at_level("WARNING"), GalleryStore.open(tmp_path) as s:
        assert s.get_gallery("empty").item_count == 0 and s.get_gallery("full").item_count == len(x)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("'full'" in m and "rebuilding" in m for m in warned)
    assert not any("'empty'" in m for m in warned)
