"""Errors are data: an INVALID_ARGUMENT that concerns one request field carries a google.rpc.BadRequest
field violation naming it, and the client surfaces it as `.field`. Signed fields refuse negatives
with INVALID_ARGUMENT; ListGalleries paginates, and a request without a page size gets every gallery."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from twinsearch.client import Client, InvalidArgument
from twinsearch.v1 import twinsearch_pb2 as pb

from .conftest import TIMEOUT, glyph, png

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def violation(call, request) -> tuple[str, str]:
    """(field, description) of the BadRequest field violation of a call that must fail with INVALID_ARGUMENT."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=TIMEOUT)
    assert info.value.code() == INVALID, info.value.details()
    status = rpc_status.from_call(info.value)
    assert status is not None and status.message == info.value.details()
    bad = error_details_pb2.BadRequest()
    assert len(status.details) == 1 and status.details[0].Unpack(bad)
    (v,) = bad.field_violations
    assert v.description == info.value.details()
    return v.field, v.description


@pytest.fixture(scope="module")
def gallery(stub):
    stub.CreateGallery(pb.CreateGalleryRequest(name="fields"), timeout=TIMEOUT)
    item = pb.EnrollItem(label="a", input=pb.Input(image=pb.Image(encoded=png(glyph(0)))))
    stub.Enroll(pb.EnrollRequest(gallery="fields", items=[item]), timeout=TIMEOUT)
    return "fields"


def probe() -> pb.Input:
    return pb.Input(image=pb.Image(encoded=png(glyph(1))))


def test_field_violations_name_the_field(stub, gallery):
    assert violation(stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[probe()], k=-1))[0] == "k"
    assert violation(stub.Search, pb.SearchRequest(gallery=gallery, probes=[probe()], k=10**6))[0] == "k"
    assert violation(stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[probe()], mean_k=-2))[0] == "mean_k"
    field, text = violation(stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[probe()], labels=["ok", " "]))
    assert field == "labels[1]" and text.startswith("labels[1]: ")
    item = pb.EnrollItem(label="a", input=probe(), client_id="x" * 300)
    field, _ = violation(stub.Enroll, pb.EnrollRequest(gallery=gallery, items=[item, item]))
    assert field == "items[0].client_id"
    assert violation(stub.ListClasses, pb.ListClassesRequest(gallery=gallery, page_size=-1))[0] == "page_size"
    assert violation(stub.ListClasses, pb.ListClassesRequest(gallery=gallery, page_token="!!"))[0] == "page_token"
    assert violation(stub.CreateGallery, pb.CreateGalleryRequest(name="no spaces"))[0] == "name"
    assert violation(stub.CreateGallery, pb.CreateGalleryRequest(name="neg", mean_k=-1))[0] == "mean_k"


def test_an_error_without_a_field_has_no_details(stub, gallery):
    with pytest.raises(grpc.RpcError) as info:
        stub.GetGallery(pb.GetGalleryRequest(name="nowhere"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and rpc_status.from_call(info.value) is None


def test_negative_index_params_are_invalid(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateGallery(pb.CreateGalleryRequest(name="neg-ivf", index=pb.INDEX_KIND_IVF,
                                                   params=pb.IndexParams(nlist=-4)), timeout=TIMEOUT)
    assert info.value.code() == INVALID and "nlist" in info.value.details()


def test_the_client_surfaces_the_field(server, gallery):
    with Client(server.address, timeout=TIMEOUT) as client:
        with pytest.raises(InvalidArgument) as err:
            client.search(gallery, png(glyph(1)), k=10**6)
        assert err.value.field == "k"
        with pytest.raises(InvalidArgument) as err:
            client.enroll(gallery, "a", [png(glyph(1))], ids=["x" * 300])
        assert err.value.field == "items[0].client_id"
        with pytest.raises(InvalidArgument) as err:
            client.gallery_page(page_token="!!")
        assert err.value.field == "page_token"


def test_list_galleries_paginates(stub, server):
    for i in range(5):
        stub.CreateGallery(pb.CreateGalleryRequest(name=f"page-{i}"), timeout=TIMEOUT)
    everything = stub.ListGalleries(pb.ListGalleriesRequest(), timeout=TIMEOUT)
    names = [g.name for g in everything.galleries]
    assert names == sorted(names) and everything.next_page_token == "" and len(names) >= 5
    seen, token, pages = [], "", 0
    while True:
        page = stub.ListGalleries(pb.ListGalleriesRequest(page_size=2, page_token=token), timeout=TIMEOUT)
        assert len(page.galleries) <= 2
        seen += [g.name for g in page.galleries]
        token, pages = page.next_page_token, pages + 1
        if not token:
            break
    assert seen == names and pages == (len(names) + 1) // 2
    assert violation(stub.ListGalleries, pb.ListGalleriesRequest(page_size=-1))[0] == "page_size"
    assert violation(stub.ListGalleries, pb.ListGalleriesRequest(page_size=10_001))[0] == "page_size"
    with Client(server.address, timeout=TIMEOUT) as client:
        first = client.gallery_page(page_size=3)
        assert [g.name for g in first.galleries] == names[:3] and first.next_page_token
        assert [g.name for g in client.galleries()] == names


def test_a_page_token_pages_only_its_own_listing(stub):
    for name in ("tokens-a", "tokens-b"):
        stub.CreateGallery(pb.CreateGalleryRequest(name=name), timeout=TIMEOUT)
        items = [pb.EnrollItem(label=f"k{k}", input=pb.Input(image=pb.Image(encoded=png(glyph(k))))) for k in range(3)]
        stub.Enroll(pb.EnrollRequest(gallery=name, items=items), timeout=TIMEOUT)
    of_a = stub.ListClasses(pb.ListClassesRequest(gallery="tokens-a", page_size=1), timeout=TIMEOUT).next_page_token
    second = stub.ListClasses(pb.ListClassesRequest(gallery="tokens-a", page_size=1, page_token=of_a), timeout=TIMEOUT)
    assert [c.label for c in second.classes] == ["k1"]
    field, message = violation(stub.ListClasses, pb.ListClassesRequest(gallery="tokens-b", page_size=1, page_token=of_a))
    assert field == "page_token" and "pages the classes of tokens-a, not the classes of tokens-b" in message
    of_galleries = stub.ListGalleries(pb.ListGalleriesRequest(page_size=1), timeout=TIMEOUT).next_page_token
    field, message = violation(stub.ListClasses, pb.ListClassesRequest(gallery="tokens-a", page_token=of_galleries))
    assert field == "page_token" and "pages the galleries" in message
    assert violation(stub.ListGalleries, pb.ListGalleriesRequest(page_token=of_a))[0] == "page_token"


def test_an_old_client_s_unsigned_k_reads_as_out_of_range(channel, gallery):
    """k was uint32: the largest value an old client could send, 2**32 - 1 (varint ff ff ff ff 0f),
    now reads as -1 and is refused like every k out of range."""
    body = pb.IdentifyRequest(gallery=gallery, probes=[probe()]).SerializeToString() + bytes.fromhex("18ffffffff0f")
    assert pb.IdentifyRequest.FromString(body).k == -1
    identify = channel.unary_unary("/twinsearch.v1.TwinSearch/Identify", request_serializer=None,
                                   response_deserializer=pb.IdentifyResponse.FromString)
    assert violation(identify, body)[0] == "k"
    small = pb.IdentifyRequest(gallery=gallery, probes=[probe()]).SerializeToString() + bytes.fromhex("1803")
    assert len(identify(small, timeout=TIMEOUT).results[0].candidates) == 1  # k = 3 reads the same as before


def test_a_bad_input_is_named_as_the_field(stub, server, gallery):
    junk = pb.Input(image=pb.Image(encoded=b"\x89PNG garbage"))
    field, text = violation(stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[probe(), junk]))
    assert field == "probes[1]" and text.startswith("probes[1]: ")
    bad_vector = pb.Input(vector=pb.Vector(data=b"\0" * 7, dim=2))
    assert violation(stub.Search, pb.SearchRequest(gallery=gallery, probes=[bad_vector]))[0] == "probes[0]"
    with Client(server.address, timeout=TIMEOUT) as client:
        with pytest.raises(InvalidArgument) as err:
            client.verify_class(gallery, [png(glyph(0)), b"\x89PNG garbage"], "a")
        assert err.value.field == "queries[1].probe"
