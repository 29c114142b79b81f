"""Round trips between the Python types and the wire messages, and wire-level validation."""

import io

import numpy as np
import pytest
from PIL import Image

from twinsearch.client import convert as c
from twinsearch.client import types as t
from twinsearch.client.errors import InvalidArgument
from twinsearch.v1 import twinsearch_pb2 as pb

THRESHOLD = t.Threshold(distance=0.8125, source=t.ThresholdSource.MODEL_FAR_1, far=0.01)


def roundtrip(to_pb, from_pb, value):
    message = to_pb(value)
    wire = type(message).FromString(message.SerializeToString())
    return from_pb(wire)


@pytest.mark.parametrize(
    "to_pb, from_pb, value",
    [
        (c.threshold_to_pb, c.threshold_from_pb, THRESHOLD),
        (c.threshold_to_pb, c.threshold_from_pb, t.Threshold(0.5, t.ThresholdSource.REQUEST)),
        (c.candidate_to_pb, c.candidate_from_pb, t.Candidate("alice", 0.3, 0.97, (4, 9))),
        (c.candidate_to_pb, c.candidate_from_pb, t.Candidate("bob", 1.2)),
        (c.identification_to_pb, c.identification_from_pb,
         t.Identification("alice", (t.Candidate("alice", 0.3, 0.9, (1,)), t.Candidate("bob", 0.7, 0.2, (2,))),
                          THRESHOLD, margin=0.4)),
        (c.identification_to_pb, c.identification_from_pb,
         t.Identification(None, (t.Candidate("bob", 1.3),), THRESHOLD, margin=None)),
        (c.verification_to_pb, c.verification_from_pb, t.Verification(True, 0.25, THRESHOLD, 0.99)),
        (c.verification_to_pb, c.verification_from_pb, t.Verification(False, 1.5, THRESHOLD, None)),
        (c.neighbor_to_pb, c.neighbor_from_pb, t.Neighbor(7, "alice", 0.1, "a/1.png", {"k": "v"})),
        (c.neighbor_to_pb, c.neighbor_from_pb, t.Neighbor(8, "bob", 0.2)),
        (c.enrolled_to_pb, c.enrolled_from_pb, t.Enrolled(3, "x", "alice", True)),
        (c.enrolled_to_pb, c.enrolled_from_pb, t.Enrolled(4, None, "bob", False)),
        (c.enroll_failure_to_pb, c.enroll_failure_from_pb, t.EnrollFailure(2, "bad.png", "cannot decode")),
        (c.class_page_to_pb, c.class_page_from_pb,
         t.ClassPage((t.ClassCount("a", 3), t.ClassCount("b", 1)), next_page_token="b")),
        (c.gallery_to_pb, c.gallery_from_pb,
         t.GalleryInfo("staff", "fp", 128, t.IndexSpec(t.IndexKind.IVF, nlist=64, nprobe=8), t.Scoring.MEAN_OF_K,
                       3, 0.75, class_count=2, item_count=5, on_gpu=False)),
        (c.gallery_to_pb, c.gallery_from_pb,
         t.GalleryInfo("g", "fp", 64, t.IndexSpec(), t.Scoring.NEAREST, 3, None)),
    ],
    ids=lambda v: type(v).__name__ if not callable(v) else v.__name__,
)
def test_roundtrip(to_pb, from_pb, value):
    assert roundtrip(to_pb, from_pb, value) == value


def test_server_info_roundtrip():
    model = t.ModelInfo(
        "omniglot", "abc123", 128, "euclidean", t.InputSpec(64, 64, 1),
        thresholds=(t.OperatingPoint("eer", 0.9, 0.05, 0.05, 1000, 5000),),
        default_threshold=t.ThresholdSource.MODEL_EER,
    )
    info = t.ServerInfo("0.1.0", "v1", model, "faiss 1.15.1", False, 0, ("a", "b"), models=(model,))
    assert roundtrip(c.server_info_to_pb, c.server_info_from_pb, info) == info
    # A server from before several models lists none: its one model is the list.
    old = t.ServerInfo("0.1.0", "v1", model, "faiss 1.15.1", False, 0, ("a", "b"))
    assert roundtrip(c.server_info_to_pb, c.server_info_from_pb, old) == info


def test_enroll_result_roundtrip_keeps_sequence():
    result = t.EnrollResult((t.Enrolled(1, "a", "x", True),), (t.EnrollFailure(1, "b", "bad"),))
    message = c.enroll_result_to_pb(result, sequence=42)
    assert message.sequence == 42
    assert c.enroll_result_from_pb(message) == result


def test_search_results_roundtrip():
    results = [[t.Neighbor(1, "a", 0.1), t.Neighbor(2, "b", 0.2)], []]
    assert c.neighbors_from_pb(c.neighbors_to_pb(results)) == results


def test_vector_roundtrip_is_exact():
    v = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    back = c.vector_from_pb(pb.Vector.FromString(c.vector_to_pb(v).SerializeToString()))
    assert back.dtype == np.float32 and np.array_equal(back, v)


@pytest.mark.parametrize("data, dim, message", [
    (b"\0" * 12, 4, "needs 16 bytes"),
    (b"", 0, "dimension is 0"),
    (np.array([1.0, np.nan], "<f4").tobytes(), 2, "NaN"),
    (np.array([np.inf, 0.0], "<f4").tobytes(), 2, "NaN or infinite"),
])
def test_bad_vectors_are_invalid(data, dim, message):
    with pytest.raises(InvalidArgument, match=message):
        c.vector_from_pb(pb.Vector(data=data, dim=dim), "probes[0]")


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4)])
def test_raw_image_roundtrip(dtype, shape):
    array = (np.random.default_rng(1).random(shape) * 200).astype(dtype)
    back = c.image_from_pb(c.image_to_pb(array))
    assert back.dtype == array.dtype and np.array_equal(back, array)


@pytest.mark.parametrize("raw, message", [
    (pb.RawImage(dtype="int64", shape=[2, 2], data=b"\0" * 32), "dtype"),
    (pb.RawImage(dtype="uint8", shape=[2, 2, 2], data=b"\0" * 8), "shape"),
    (pb.RawImage(dtype="uint8", shape=[4], data=b"\0" * 4), "shape"),
    (pb.RawImage(dtype="uint8", shape=[0, 3], data=b""), "zero-size"),
    (pb.RawImage(dtype="uint8", shape=[2, 2], data=b"\0" * 3), "needs 4 bytes"),
])
def test_bad_raw_images_are_invalid(raw, message):
    with pytest.raises(InvalidArgument, match=message):
        c.image_from_pb(pb.Image(raw=raw), "images[2]")


def test_image_inputs_of_every_kind(tmp_path):
    picture = Image.new("L", (6, 4), color=200)
    path = tmp_path / "p.png"
    picture.save(path)
    encoded = path.read_bytes()
    assert c.image_from_pb(c.image_to_pb(path)) == encoded
    assert c.image_from_pb(c.image_to_pb(str(path))) == encoded
    assert c.image_from_pb(c.image_to_pb(encoded)) == encoded
    decoded = Image.open(io.BytesIO(c.image_from_pb(c.image_to_pb(picture))))
    assert decoded.size == (6, 4)
    with pytest.raises(InvalidArgument, match="cannot read image file"):
        c.image_to_pb(tmp_path / "missing.png")
    with pytest.raises(InvalidArgument, match="must be a path"):
        c.image_to_pb(3.5)
    with pytest.raises(InvalidArgument, match="empty image bytes"):
        c.image_from_pb(pb.Image(encoded=b""))


def test_inputs_tell_vectors_from_images():
    vector = np.ones(16, np.float32)
    image = np.zeros((4, 4), np.uint8)
    assert c.input_to_pb(vector).WhichOneof("kind") == "vector"
    assert c.input_to_pb(image).WhichOneof("kind") == "image"
    assert np.array_equal(c.input_from_pb(c.input_to_pb(vector)), vector)
    with pytest.raises(InvalidArgument, match="neither"):
        c.input_from_pb(pb.Input())


def test_threshold_options():
    assert c.threshold_options_from_pb(c.threshold_options_to_pb()) == (None, None)
    assert c.threshold_options_from_pb(c.threshold_options_to_pb(threshold=0.5)) == (0.5, None)
    assert c.threshold_options_from_pb(c.threshold_options_to_pb(target_far=0.01)) == (None, 0.01)
    with pytest.raises(InvalidArgument):
        c.threshold_options_to_pb(threshold=0.5, target_far=0.01)


def test_every_enum_value_maps_both_ways():
    for kind in t.IndexKind:
        assert c.index_kind_from_pb(c.index_kind_to_pb(kind)) is kind
    for scoring in t.Scoring:
        assert c.scoring_from_pb(c.scoring_to_pb(scoring)) is scoring
    for source in t.ThresholdSource:
        assert c.threshold_source_from_pb(c.threshold_source_to_pb(source)) is source
    assert c.index_kind_from_pb(0) is None and c.scoring_from_pb(0) is None
    with pytest.raises(InvalidArgument):
        c.scoring_from_pb(99)
