"""Every RPC's happy path on a real server, through the generated stubs."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from twinsearch.client import convert as c
from twinsearch.v1 import twinsearch_pb2 as pb

from .conftest import DIM, SIDE, TIMEOUT, glyph, png


def image(cls: int, variant: int = 0) -> pb.Image:
    return pb.Image(encoded=png(glyph(cls, variant)))


def probe(cls: int, variant: int = 0) -> pb.Input:
    return pb.Input(image=image(cls, variant))


@pytest.fixture(scope="module")
def gallery(stub):
    """A gallery with 6 classes of 2 images each, enrolled through Enroll."""
    stub.CreateGallery(pb.CreateGalleryRequest(name="chars"), timeout=TIMEOUT)
    items = [pb.EnrollItem(label=f"char{k}", input=probe(k, v), client_id=f"char{k}-{v}",
                           metadata={"variant": str(v)})
             for k in range(6) for v in range(2)]
    answer = stub.Enroll(pb.EnrollRequest(gallery="chars", items=items, sequence=7), timeout=TIMEOUT)
    assert answer.sequence == 7 and len(answer.items) == 12 and all(i.created for i in answer.items)
    return "chars"


def test_info(stub):
    info = c.server_info_from_pb(stub.Info(pb.InfoRequest(), timeout=TIMEOUT))
    assert info.api_version == "v1"
    assert info.model.dim == DIM and info.model.metric == "euclidean"
    assert (info.model.input.width, info.model.input.height, info.model.input.channels) == (SIDE, SIDE, 1)
    assert [p.name for p in info.model.thresholds] == ["eer", "far_1", "far_0_1"]
    assert info.model.default_threshold.value == "model_eer"
    assert info.index_backend.startswith("faiss ")


def test_embed_encoded_and_raw(stub):
    raw = c.raw_image_to_pb(glyph(3))
    answer = stub.Embed(pb.EmbedRequest(images=[image(3), pb.Image(raw=raw)]), timeout=TIMEOUT)
    vectors = [c.vector_from_pb(v) for v in answer.vectors]
    assert len(vectors) == 2 and vectors[0].shape == (DIM,)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)  # PNG and raw pixels: the same image
    assert answer.model_fingerprint == stub.Info(pb.InfoRequest(), timeout=TIMEOUT).model.fingerprint


def test_verify_pairs_of_images_and_vectors(stub):
    vec = stub.Embed(pb.EmbedRequest(images=[image(1)]), timeout=TIMEOUT).vectors[0]
    pairs = [
        pb.Pair(a=probe(1), b=pb.Input(vector=vec)),   # the same image as a vector: distance ~0
        pb.Pair(a=probe(1), b=probe(4)),
    ]
    answer = stub.Verify(pb.VerifyRequest(pairs=pairs), timeout=TIMEOUT)
    same, other = [c.verification_from_pb(r) for r in answer.results]
    assert same.distance < 1e-3 and same.same and same.probability > 0.99
    assert other.distance > same.distance
    assert same.threshold.source.value == "model_eer"
    explicit = stub.Verify(pb.VerifyRequest(pairs=pairs, threshold=pb.ThresholdOptions(threshold=0.0001)),
                           timeout=TIMEOUT)
    assert explicit.results[0].threshold.source == pb.THRESHOLD_SOURCE_REQUEST
    assert not explicit.results[1].same
    far = stub.Verify(pb.VerifyRequest(pairs=pairs, threshold=pb.ThresholdOptions(target_far=0.01)),
                      timeout=TIMEOUT)
    assert far.results[0].threshold.source == pb.THRESHOLD_SOURCE_REQUEST_FAR


def test_gallery_lifecycle(stub):
    made = stub.CreateGallery(pb.CreateGalleryRequest(
        name="tmp-1", index=pb.INDEX_KIND_HNSW, scoring=pb.SCORING_PROTOTYPE, mean_k=4, threshold=0.5),
        timeout=TIMEOUT)
    info = c.gallery_from_pb(made)
    assert info.index.kind.value == "hnsw" and info.scoring.value == "prototype"
    assert info.mean_k == 4 and info.threshold == 0.5 and info.dim == DIM
    assert stub.GetGallery(pb.GetGalleryRequest(name="tmp-1"), timeout=TIMEOUT) == made
    names = [g.name for g in stub.ListGalleries(pb.ListGalleriesRequest(), timeout=TIMEOUT).galleries]
    assert "tmp-1" in names
    stub.Enroll(pb.EnrollRequest(gallery="tmp-1", items=[pb.EnrollItem(label="x", input=probe(0))]),
                timeout=TIMEOUT)
    answer = stub.DeleteGallery(pb.DeleteGalleryRequest(name="tmp-1"), timeout=TIMEOUT)
    assert answer.items_deleted == 1
    assert "tmp-1" not in [g.name for g in stub.ListGalleries(pb.ListGalleriesRequest(), timeout=TIMEOUT).galleries]


def test_enroll_is_idempotent_with_client_ids(stub, gallery):
    again = stub.Enroll(pb.EnrollRequest(gallery=gallery, items=[
        pb.EnrollItem(label="char0", input=probe(0, 0), client_id="char0-0")]), timeout=TIMEOUT)
    assert [i.created for i in again.items] == [False]
    assert stub.GetGallery(pb.GetGalleryRequest(name=gallery), timeout=TIMEOUT).item_count == 12


def test_enroll_skip_invalid_reports_bad_items(stub):
    stub.CreateGallery(pb.CreateGalleryRequest(name="skips"), timeout=TIMEOUT)
    items = [
        pb.EnrollItem(label="a", input=probe(0), client_id="ok-0"),
        pb.EnrollItem(label="a", input=pb.Input(image=pb.Image(encoded=b"not an image")), client_id="bad-1"),
        pb.EnrollItem(label="", input=probe(1)),
        pb.EnrollItem(label="b", input=pb.Input(vector=pb.Vector(data=b"\0" * 8, dim=2))),
        pb.EnrollItem(label="b", input=probe(1)),
    ]
    answer = stub.Enroll(pb.EnrollRequest(gallery="skips", items=items, skip_invalid=True), timeout=TIMEOUT)
    assert [i.label for i in answer.items] == ["a", "b"]
    assert [f.index for f in answer.failed] == [1, 2, 3]
    assert answer.failed[0].client_id == "bad-1" and "items[1]" in answer.failed[0].reason
    assert "empty label" in answer.failed[1].reason
    assert "items[3]" in answer.failed[2].reason


def test_enroll_stream_acknowledges_each_batch(stub):
    stub.CreateGallery(pb.CreateGalleryRequest(name="streamed"), timeout=TIMEOUT)
    batches = [pb.EnrollRequest(gallery="streamed", sequence=s,
                                items=[pb.EnrollItem(label=f"s{s}", input=probe(s, v), client_id=f"{s}-{v}")
                                       for v in range(3)])
               for s in range(4)]
    acks = list(stub.EnrollStream(iter(batches), timeout=TIMEOUT))
    assert [a.sequence for a in acks] == [0, 1, 2, 3]
    assert all(len(a.items) == 3 for a in acks)
    assert stub.GetGallery(pb.GetGalleryRequest(name="streamed"), timeout=TIMEOUT).item_count == 12


def test_enroll_stream_stores_nothing_after_a_failing_batch(stub):
    # The stream prepares the next batch while one is being stored: a batch after a failing one may be
    # decoded and embedded, but it is never stored.
    import grpc

    stub.CreateGallery(pb.CreateGalleryRequest(name="halted"), timeout=TIMEOUT)

    def batch(s: int, bad: bool = False) -> pb.EnrollRequest:
        items = [pb.EnrollItem(label=f"s{s}", input=probe(s, v), client_id=f"{s}-{v}") for v in range(3)]
        if bad:
            items[1] = pb.EnrollItem(label=f"s{s}", input=pb.Input(image=pb.Image(encoded=b"not an image")))
        return pb.EnrollRequest(gallery="halted", sequence=s, items=items)

    acks = []
    with pytest.raises(grpc.RpcError) as failed:
        for ack in stub.EnrollStream(iter([batch(0), batch(1), batch(2, bad=True), batch(3), batch(4)]),
                                     timeout=TIMEOUT):
            acks.append(ack.sequence)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "items[1]" in failed.value.details()
    assert acks == [0, 1]
    assert stub.GetGallery(pb.GetGalleryRequest(name="halted"), timeout=TIMEOUT).item_count == 6
    classes = stub.ListClasses(pb.ListClassesRequest(gallery="halted"), timeout=TIMEOUT).classes
    assert sorted(x.label for x in classes) == ["s0", "s1"]


def test_identify_ranks_the_enrolled_class_first(stub, gallery):
    answer = stub.Identify(pb.IdentifyRequest(gallery=gallery, probes=[probe(2), probe(5)], k=3), timeout=TIMEOUT)
    results = [c.identification_from_pb(r) for r in answer.results]
    assert [r.label for r in results] == ["char2", "char5"]
    for r in results:
        assert len(r.candidates) == 3 and r.candidates[0].distance < 1e-3
        assert [x.distance for x in r.candidates] == sorted(x.distance for x in r.candidates)
        assert r.margin is not None and r.margin >= 0
        assert r.candidates[0].nearest_ids
    unknown = stub.Identify(pb.IdentifyRequest(gallery=gallery, probes=[probe(40)],
                                               threshold=pb.ThresholdOptions(threshold=1e-6)), timeout=TIMEOUT)
    assert not unknown.results[0].known and unknown.results[0].label == ""
    restricted = stub.Identify(pb.IdentifyRequest(gallery=gallery, probes=[probe(2)], labels=["char1", "char3"]),
                               timeout=TIMEOUT)
    assert {x.label for x in restricted.results[0].candidates} <= {"char1", "char3"}


def test_verify_class(stub, gallery):
    queries = [pb.ClassQuery(probe=probe(2), label="char2"), pb.ClassQuery(probe=probe(2), label="char4")]
    answer = stub.VerifyClass(pb.VerifyClassRequest(gallery=gallery, queries=queries, scoring=pb.SCORING_MEAN_OF_K,
                                                    mean_k=2), timeout=TIMEOUT)
    yes, no = answer.results
    assert yes.distance < no.distance
    assert yes.same


def test_search_returns_items_with_metadata(stub, gallery):
    answer = stub.Search(pb.SearchRequest(gallery=gallery, probes=[probe(3)], k=4), timeout=TIMEOUT)
    neighbors = c.neighbors_from_pb(answer)[0]
    assert len(neighbors) == 4
    assert neighbors[0].label == "char3" and neighbors[0].client_id == "char3-0"
    assert neighbors[0].metadata == {"variant": "0"}
    assert [n.distance for n in neighbors] == sorted(n.distance for n in neighbors)


def test_list_classes_pages_and_delete(stub):
    stub.CreateGallery(pb.CreateGalleryRequest(name="classes"), timeout=TIMEOUT)
    items = [pb.EnrollItem(label=f"k{k}", input=probe(k, v), client_id=f"{k}/{v}") for k in range(5) for v in range(2)]
    enrolled = stub.Enroll(pb.EnrollRequest(gallery="classes", items=items), timeout=TIMEOUT).items
    first = stub.ListClasses(pb.ListClassesRequest(gallery="classes", page_size=3), timeout=TIMEOUT)
    assert [x.label for x in first.classes] == ["k0", "k1", "k2"] and first.next_page_token
    second = stub.ListClasses(pb.ListClassesRequest(gallery="classes", page_size=3,
                                                    page_token=first.next_page_token), timeout=TIMEOUT)
    assert [x.label for x in second.classes] == ["k3", "k4"] and not second.next_page_token
    assert all(x.count == 2 for x in list(first.classes) + list(second.classes))
    assert stub.Delete(pb.DeleteRequest(gallery="classes", label="k0"), timeout=TIMEOUT).deleted == 2
    assert stub.Delete(pb.DeleteRequest(gallery="classes", ids=[enrolled[2].id], client_ids=["2/0"]),
                       timeout=TIMEOUT).deleted == 2
    left = stub.ListClasses(pb.ListClassesRequest(gallery="classes"), timeout=TIMEOUT)
    assert [(x.label, x.count) for x in left.classes] == [("k1", 1), ("k2", 1), ("k3", 2), ("k4", 2)]


def test_metrics_endpoint_counts_calls(server, stub, gallery):
    stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    assert 'twinsearch_rpcs_total{code="OK",method="Info"}' in text
    assert "twinsearch_rpc_latency_seconds_bucket" in text
    assert 'twinsearch_batch_rows_count{stage="encoder"}' in text
    assert 'twinsearch_gallery_items{gallery="chars"} 12.0' in text
