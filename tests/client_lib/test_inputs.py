"""What callers may pass: one item or a list, images of every kind, vectors; canonical payloads."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twinsearch.client.base import parse_index, parse_scoring
from twinsearch.client.errors import InvalidArgument
from twinsearch.client.inputs import as_batch, broadcast, enroll_items, payload
from twinsearch.client.types import IndexKind, IndexSpec, Scoring


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("single", [
    "a.png", Path("a.png"), b"\x89PNG", np.zeros(4, np.float32), np.zeros((8, 8), np.uint8),
    Image.new("L", (4, 4)),
])
def test_one_item_is_single(single):
    items, is_single = as_batch(single)
    assert is_single and len(items) == 1 and items[0] is single


@pytest.mark.parametrize("batch", [["a.png", "b.png"], ("a.png",), [np.zeros(4)], (x for x in ["a", "b"])])
def test_lists_tuples_and_iterables_are_batches(batch):
    items, is_single = as_batch(batch)
    assert not is_single and all(isinstance(x, (str, np.ndarray)) for x in items)


def test_payload_of_each_image_kind(tmp_path):
    data = _png()
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert payload(path) == data
    assert payload(str(path)) == data
    assert payload(bytearray(data)) == data
    pil = payload(Image.open(io.BytesIO(data)))
    assert isinstance(pil, bytes) and np.array_equal(np.asarray(Image.open(io.BytesIO(pil))),
                                                     np.asarray(Image.open(io.BytesIO(data))))
    raw = payload(np.ones((8, 8, 3), np.uint8))
    assert raw.dtype == np.uint8 and raw.shape == (8, 8, 3)


def test_array_payloads_take_the_wire_dtype():
    assert payload(np.ones((4, 4), np.float64)).dtype == np.float32
    assert payload(np.ones((4, 4), np.uint16)).dtype == np.uint16
    vector = payload(np.ones(16, np.float64))
    assert vector.dtype == np.float32 and vector.shape == (16,) and vector.flags.c_contiguous


def test_bad_inputs_name_the_item(tmp_path):
    with pytest.raises(InvalidArgument, match=r"probes\[0\]: cannot read image file"):
        payload(tmp_path / "missing.png", "probes[0]")
    with pytest.raises(InvalidArgument, match="a path, bytes, a PIL image or a numpy array"):
        payload(42)
    with pytest.raises(InvalidArgument, match="H x W or H x W x C"):
        payload(np.zeros((2, 2, 2, 2)))
    with pytest.raises(InvalidArgument, match="empty vector"):
        payload(np.zeros(0, np.float32))


def test_enroll_items_broadcast_label_and_metadata():
    items = enroll_items("alice", [b"a", b"b"], ids=["a1", None], metadata={"team": "x"})
    assert [i.label for i in items] == ["alice", "alice"]
    assert [i.client_id for i in items] == ["a1", None]
    assert all(i.metadata == {"team": "x"} for i in items)
    one = enroll_items(["bob"], b"c", ids="c1")
    assert one[0].label == "bob" and one[0].client_id == "c1"
    with pytest.raises(InvalidArgument, match="2 labels for 3 items"):
        enroll_items(["a", "b"], [b"1", b"2", b"3"])
    with pytest.raises(InvalidArgument, match="one client id for 2 items"):
        enroll_items("a", [b"1", b"2"], ids="x")
    with pytest.raises(InvalidArgument, match="no images"):
        enroll_items("a", [])
    assert broadcast(None, 2, "x") == [None, None]


def test_index_and_scoring_arguments():
    assert parse_index("hnsw") == IndexSpec(kind=IndexKind.HNSW)
    assert parse_index(None).kind is IndexKind.EXACT
    assert parse_index("ivf", {"nlist": 8, "nprobe": 2}) == IndexSpec(kind=IndexKind.IVF, nlist=8, nprobe=2)
    spec = IndexSpec(kind=IndexKind.HNSW, ef_search=99)
    assert parse_index(spec) is spec
    assert parse_scoring("mean_of_k") is Scoring.MEAN_OF_K and parse_scoring(None) is None
    with pytest.raises(InvalidArgument, match="unknown index kind"):
        parse_index("annoy")
    with pytest.raises(InvalidArgument, match="unknown index parameters"):
        parse_index("ivf", {"nlists": 8})
    with pytest.raises(InvalidArgument, match="unknown scoring"):
        parse_scoring("closest")


def test_one_label_is_a_label_not_its_characters():
    from twinsearch.client.base import label_list

    assert label_list("alice") == ["alice"]
    assert label_list(("a", "b")) == ["a", "b"]
    assert label_list(None) is None


def test_a_float_matrix_as_wide_as_the_model_is_a_batch_of_vectors():
    matrix = np.ones((5, 16), np.float32)
    rows, single = as_batch(matrix, dim=16)
    assert not single and len(rows) == 5 and all(r.shape == (16,) for r in rows)
    assert not as_batch(matrix.astype(np.float64), dim=16)[1]
    for image in (matrix, np.ones((5, 16), np.uint8), np.ones((5, 16, 1), np.float32)):
        assert as_batch(image, dim=None if image is matrix else 16)[1]   # one image
    assert as_batch(matrix, dim=8)[1]
    items = enroll_items("a", np.ones((3, 4), np.float32), ids=["x", "y", "z"], dim=4)
    assert [i.client_id for i in items] == ["x", "y", "z"] and items[0].payload.shape == (4,)
    with pytest.raises(InvalidArgument, match=r"3 client ids for 1 items; a 2-D uint8 array of shape \(3, 4\)"):
        enroll_items("a", np.ones((3, 4), np.uint8), ids=["x", "y", "z"], dim=4)


def test_errors_name_inputs_by_the_caller_s_position_and_path(tmp_path):
    from twinsearch.client.inputs import name_input

    probes = [b"x", tmp_path / "a.png", "b.png"]
    assert name_input("probes[1]: bad", {"probes": probes}) == f"probes[1] ({tmp_path / 'a.png'}): bad"
    assert name_input("probes[0]: bad", {"probes": probes}) == "probes[0]: bad"       # bytes: no name
    assert name_input("probes[0]: bad", {"probes": probes}, positions=[2]) == "probes[2] (b.png): bad"
    assert name_input("pairs[0].b: bad", {"pairs.a": ["x.png"], "pairs.b": ["y.png"]}) == "pairs[0].b (y.png): bad"
    assert name_input("probes[2]: cannot read image file 'b.png'", {"probes": probes}) == \
        "probes[2]: cannot read image file 'b.png'"                                # named already
    assert name_input("labels[0]: empty", {"probes": probes}) == "labels[0]: empty"
    assert name_input("3 probes in one call", {"probes": probes}) == "3 probes in one call"
    path = tmp_path / "c.png"
    Image.new("L", (4, 4)).save(path)
    assert name_input("probes[0]: too large", {"probes": [Image.open(path)]}) == f"probes[0] ({path}): too large"
