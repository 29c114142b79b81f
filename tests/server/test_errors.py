"""Each kind of bad input ends in its documented status code, with details naming the item; no input
ever yields UNKNOWN or INTERNAL, and the server keeps serving."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from twinsearch.client import convert as c
from twinsearch.v1 import twinsearch_pb2 as pb

from .conftest import DIM, TIMEOUT, glyph, png

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def good() -> pb.Input:
    return pb.Input(image=pb.Image(encoded=png(glyph(0))))


def vector_input(values) -> pb.Input:
    return pb.Input(vector=c.vector_to_pb(np.asarray(values, dtype=np.float32)))


def unit(seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def big_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 255).save(buf, format="PNG")
    return buf.getvalue()


def expect(code: grpc.StatusCode, call, request, *, contains: str = "") -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=TIMEOUT)
    assert info.value.code() == code, info.value.details()
    assert contains in info.value.details()
    return info.value.details()


@pytest.fixture(scope="module")
def gallery(stub):
    stub.CreateGallery(pb.CreateGalleryRequest(name="errs"), timeout=TIMEOUT)
    stub.Enroll(pb.EnrollRequest(gallery="errs", items=[pb.EnrollItem(label="zero", input=good())]), timeout=TIMEOUT)
    stub.CreateGallery(pb.CreateGalleryRequest(name="empty"), timeout=TIMEOUT)
    return "errs"


BAD_IMAGES = [
    (pb.Image(encoded=b"definitely not an image"), INVALID, "images[1]"),
    (pb.Image(encoded=png(glyph(0))[:60]), INVALID, "images[1]"),                       # truncated PNG
    (pb.Image(), INVALID, "images[1]: no image given"),
    (pb.Image(raw=pb.RawImage(dtype="int64", shape=[4, 4], data=b"\0" * 128)), INVALID, "dtype"),
    (pb.Image(raw=pb.RawImage(dtype="uint8", shape=[4, 4, 2], data=b"\0" * 32)), INVALID, "shape"),
    (pb.Image(raw=pb.RawImage(dtype="uint8", shape=[4, 4], data=b"\0" * 15)), INVALID, "needs 16 bytes"),
    (pb.Image(raw=pb.RawImage(dtype="uint8", shape=[4, 5, 6, 3], data=b"\0" * 360)), INVALID, "shape"),
    (pb.Image(raw=c.raw_image_to_pb(np.full((4, 4), 7.0, dtype=np.float32))), INVALID, "[0, 1]"),
    (pb.Image(encoded=big_png(1100, 1000)), EXHAUSTED, "pixels"),                       # over --max-pixels
    (pb.Image(raw=pb.RawImage(dtype="uint8", shape=[1001, 1000], data=b"\0" * 1_001_000)), EXHAUSTED, "pixels"),
]


@pytest.mark.parametrize("bad, code, contains", BAD_IMAGES)
def test_bad_images(stub, bad, code, contains):
    good_image = pb.Image(encoded=png(glyph(0)))
    details = expect(code, stub.Embed, pb.EmbedRequest(images=[good_image, bad]), contains=contains)
    assert details.startswith("images[1]")


BAD_VECTORS = [
    (pb.Vector(data=np.full(DIM, np.nan, dtype="<f4").tobytes(), dim=DIM), "NaN"),
    (pb.Vector(data=np.full(DIM, np.inf, dtype="<f4").tobytes(), dim=DIM), "NaN or infinite"),
    (c.vector_to_pb(unit()[:8] / np.linalg.norm(unit()[:8])), "dimension 8"),
    (pb.Vector(data=b"\0" * 10, dim=DIM), "bytes"),
    (pb.Vector(data=b"", dim=0), "dimension is 0"),
    (c.vector_to_pb(unit() * 3), "norm"),
]


@pytest.mark.parametrize("bad, contains", BAD_VECTORS)
def test_bad_vectors(stub, gallery, bad, contains):
    expect(INVALID, stub.Verify, pb.VerifyRequest(pairs=[pb.Pair(a=good(), b=good()),
                                                         pb.Pair(a=good(), b=pb.Input(vector=bad))]),
           contains="pairs[1].b")
    expect(INVALID, stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[good(), pb.Input(vector=bad)]),
           contains=contains)


def test_enroll_is_all_or_nothing(stub, gallery):
    items = [pb.EnrollItem(label="fine", input=good()), pb.EnrollItem(label="", input=good()),
             pb.EnrollItem(label="fine", input=good())]
    expect(INVALID, stub.Enroll, pb.EnrollRequest(gallery=gallery, items=items), contains="items[1]: empty label")
    long_label = [pb.EnrollItem(label="x" * 257, input=good())]
    expect(INVALID, stub.Enroll, pb.EnrollRequest(gallery=gallery, items=long_label), contains="257")
    bad_image = [pb.EnrollItem(label="a", input=good()), pb.EnrollItem(label="b", input=pb.Input())]
    expect(INVALID, stub.Enroll, pb.EnrollRequest(gallery=gallery, items=bad_image), contains="items[1]")
    twice = [pb.EnrollItem(label="a", input=good(), client_id="same"),
             pb.EnrollItem(label="b", input=good(), client_id="same")]
    expect(INVALID, stub.Enroll, pb.EnrollRequest(gallery=gallery, items=twice), contains="items[1]")
    assert stub.GetGallery(pb.GetGalleryRequest(name=gallery), timeout=TIMEOUT).item_count == 1


def test_limits(stub, gallery):
    many = [pb.Image(encoded=png(glyph(0)))] * 65  # the test server allows 64 per call
    expect(EXHAUSTED, stub.Embed, pb.EmbedRequest(images=many), contains="65 images")
    expect(EXHAUSTED, stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[good()] * 65), contains="65 probes")
    expect(EXHAUSTED, stub.Enroll, pb.EnrollRequest(gallery=gallery, items=[pb.EnrollItem(label="a", input=good())]
                                                    * 65), contains="65 items")
    huge = pb.Image(encoded=b"\x89PNG" + b"\0" * (3 * 1024 * 1024))  # over the 2 MiB message limit
    expect(EXHAUSTED, stub.Embed, pb.EmbedRequest(images=[huge]))
    expect(INVALID, stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[good()], k=51), contains="k must")
    expect(INVALID, stub.Search, pb.SearchRequest(gallery=gallery, probes=[good()], k=51), contains="k must")


def test_thresholds_out_of_range(stub, gallery):
    pair = [pb.Pair(a=good(), b=good())]
    for options in (pb.ThresholdOptions(threshold=-0.1), pb.ThresholdOptions(threshold=2.5),
                    pb.ThresholdOptions(threshold=float("nan")), pb.ThresholdOptions(target_far=0.0),
                    pb.ThresholdOptions(target_far=1.5)):
        expect(INVALID, stub.Verify, pb.VerifyRequest(pairs=pair, threshold=options))
        expect(INVALID, stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[good()], threshold=options))
    expect(INVALID, stub.CreateGallery, pb.CreateGalleryRequest(name="thr", threshold=3.0))


def test_unknown_things(stub, gallery):
    expect(NOT_FOUND, stub.GetGallery, pb.GetGalleryRequest(name="nope"), contains="nope")
    expect(NOT_FOUND, stub.DeleteGallery, pb.DeleteGalleryRequest(name="nope"))
    expect(NOT_FOUND, stub.Identify, pb.IdentifyRequest(gallery="nope", probes=[good()]))
    expect(NOT_FOUND, stub.Search, pb.SearchRequest(gallery="nope", probes=[good()]))
    expect(NOT_FOUND, stub.Enroll, pb.EnrollRequest(gallery="nope", items=[pb.EnrollItem(label="a", input=good())]))
    expect(NOT_FOUND, stub.ListClasses, pb.ListClassesRequest(gallery="nope"))
    expect(NOT_FOUND, stub.VerifyClass, pb.VerifyClassRequest(
        gallery=gallery, queries=[pb.ClassQuery(probe=good(), label="zero"), pb.ClassQuery(probe=good(), label="who")]),
        contains="who")
    expect(NOT_FOUND, stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[good()], labels=["who"]))
    expect(NOT_FOUND, stub.Delete, pb.DeleteRequest(gallery=gallery, label="who"))


def test_gallery_requests(stub, gallery):
    expect(grpc.StatusCode.ALREADY_EXISTS, stub.CreateGallery, pb.CreateGalleryRequest(name=gallery))
    expect(INVALID, stub.CreateGallery, pb.CreateGalleryRequest(name="../etc"))
    expect(INVALID, stub.CreateGallery, pb.CreateGalleryRequest(name=""))
    expect(INVALID, stub.CreateGallery, pb.CreateGalleryRequest(name="enum", scoring=99))
    expect(INVALID, stub.CreateGallery, pb.CreateGalleryRequest(name="enum", index=42))
    expect(PRECONDITION, stub.Identify, pb.IdentifyRequest(gallery="empty", probes=[good()]), contains="empty")
    expect(INVALID, stub.ListClasses, pb.ListClassesRequest(gallery=gallery, page_token="abc"))  # not base64 a server gave
    expect(INVALID, stub.ListClasses, pb.ListClassesRequest(gallery=gallery, page_size=20_000))
    expect(INVALID, stub.Delete, pb.DeleteRequest(gallery=gallery, label="zero", ids=[1]))
    expect(INVALID, stub.Delete, pb.DeleteRequest(gallery=gallery))
    expect(INVALID, stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=[good()], scoring=77))
    expect(INVALID, stub.VerifyClass, pb.VerifyClassRequest(gallery=gallery, queries=[pb.ClassQuery(probe=good())]),
           contains="queries[0]")


def test_a_client_id_sent_again_with_another_image(stub, gallery):
    first = pb.EnrollItem(label="one", input=good(), client_id="errs-one")
    stub.Enroll(pb.EnrollRequest(gallery=gallery, items=[first]), timeout=TIMEOUT)
    other = pb.EnrollItem(label="one", input=pb.Input(image=pb.Image(encoded=png(glyph(1)))), client_id="errs-one")
    expect(grpc.StatusCode.ALREADY_EXISTS, stub.Enroll, pb.EnrollRequest(gallery=gallery, items=[other]),
           contains="items[0]: client id 'errs-one' names another image")
    again = pb.EnrollItem(label="one", input=good(), client_id="errs-one")
    new = pb.EnrollItem(label="two", input=pb.Input(image=pb.Image(encoded=png(glyph(2)))), client_id="errs-two")
    answer = stub.Enroll(pb.EnrollRequest(gallery="empty", items=[again]), timeout=TIMEOUT)  # another gallery
    assert answer.items[0].created
    stub.Delete(pb.DeleteRequest(gallery="empty", client_ids=["errs-one"]), timeout=TIMEOUT)
    answer = stub.Enroll(pb.EnrollRequest(gallery=gallery, items=[new, other, again], skip_invalid=True),
                         timeout=TIMEOUT)
    assert [(i.client_id, i.created) for i in answer.items] == [("errs-two", True)]
    assert [(f.index, f.client_id) for f in answer.failed] == [(1, "errs-one"), (2, "errs-one")]
    assert "names another image" in answer.failed[0].reason and "repeats items[1]" in answer.failed[1].reason


def test_random_garbage_never_breaks_the_server(stub, gallery):
    rng = np.random.default_rng(7)
    for i in range(40):
        blob = rng.bytes(int(rng.integers(1, 400)))
        if i % 3 == 0:
            blob = png(glyph(i))[:16] + blob  # a PNG header, then noise
        shape = [int(s) for s in rng.integers(0, 6, size=int(rng.integers(0, 5)))]
        raw = pb.RawImage(dtype=str(rng.choice(["uint8", "uint16", "float32", "x"])), shape=shape, data=blob)
        for request, call in ((pb.EmbedRequest(images=[pb.Image(encoded=blob)]), stub.Embed),
                              (pb.EmbedRequest(images=[pb.Image(raw=raw)]), stub.Embed),
                              (pb.IdentifyRequest(gallery=gallery, probes=[pb.Input(vector=pb.Vector(
                                  data=blob[: 4 * (len(blob) // 4)], dim=len(blob) // 4))]), stub.Identify)):
            try:
                call(request, timeout=TIMEOUT)
            except grpc.RpcError as exc:
                assert exc.code() in (INVALID, EXHAUSTED, NOT_FOUND, PRECONDITION), (exc.code(), exc.details())
    assert stub.Info(pb.InfoRequest(), timeout=TIMEOUT).api_version == "v1"


@pytest.mark.parametrize("method, payload", [
    ("Enroll", b"\x0a\x03\xff\xfe\xfd"),       # gallery: bytes that are not UTF-8
    ("Identify", b"\xff\xff\xff"),             # not protobuf at all
    ("EnrollStream", b"\x0a\x02\xc3\x28"),
])
def test_malformed_messages_are_invalid_arguments(channel, method, payload):
    path = f"/twinsearch.v1.TwinSearch/{method}"
    with pytest.raises(grpc.RpcError) as info:
        if method == "EnrollStream":
            list(channel.stream_stream(path)(iter([payload]), timeout=TIMEOUT))
        else:
            channel.unary_unary(path)(payload, timeout=TIMEOUT)
    assert info.value.code() == INVALID, info.value.details()
    assert "not a valid twinsearch.v1" in info.value.details()


def test_identify_with_skip_invalid_reports_each_bad_probe_by_request_position(stub, gallery):
    probes = [good(), pb.Input(image=pb.Image(raw=pb.RawImage(dtype="uint8", shape=[2, 2], data=b"x"))),
              vector_input(unit()), pb.Input(image=pb.Image(encoded=b"junk")), vector_input(np.ones(DIM + 1)),
              pb.Input(image=pb.Image(encoded=big_png(1200, 1200)))]
    expect(INVALID, stub.Identify, pb.IdentifyRequest(gallery=gallery, probes=probes), contains="probes[1]")
    response = stub.Identify(pb.IdentifyRequest(gallery=gallery, probes=probes, skip_invalid=True), timeout=TIMEOUT)
    assert len(response.results) == 2 and response.results[0].label == "zero"
    assert [f.index for f in response.failed] == [1, 3, 4, 5]
    assert [f.reason.split(":")[0] for f in response.failed] == ["probes[1]", "probes[3]", "probes[4]", "probes[5]"]
    assert "pixel" in response.failed[3].reason
