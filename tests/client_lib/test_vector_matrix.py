"""An (n, dim) float matrix is n vectors wherever vectors may replace images, in both clients."""

import numpy as np
import pytest

from twinsearch.client import InvalidArgument


@pytest.fixture(params=["remote", "local"])
def any_client(request):
    return request.getfixturevalue("client" if request.param == "remote" else "local_client")


def test_a_matrix_of_vectors_is_many_vectors(any_client, unit_vectors, dim):
    c = any_client
    c.create_gallery("g")
    matrix = unit_vectors(20, seed=3)
    result = c.enroll("g", [f"c{i % 5}" for i in range(20)], matrix, ids=[f"v{i}" for i in range(20)])
    assert len(result.stored) == 20 and [s.client_id for s in result.stored] == [f"v{i}" for i in range(20)]
    assert c.get_gallery("g").item_count == 20

    answers = c.identify("g", matrix[:3], k=2)                      # float32 rows
    assert [a.label for a in answers] == ["c0", "c1", "c2"]
    assert answers == c.identify("g", list(matrix[:3]), k=2)
    assert c.identify("g", matrix[:3].astype(np.float64), k=2) == answers  # float64 rows too
    neighbours = c.search("g", matrix[:2], k=1)
    assert [n[0].client_id for n in neighbours] == ["v0", "v1"]
    checks = c.verify_class("g", matrix[:2], ["c0", "c1"])
    assert [v.same for v in checks] == [True, True]
    pairs = c.verify(matrix[:2], matrix[:2])
    assert len(pairs) == 2 and all(p.distance == 0.0 for p in pairs)
    one_row = c.identify("g", matrix[:1])                           # a matrix of one row: a list of one
    assert isinstance(one_row, list) and len(one_row) == 1


def test_a_matrix_of_another_width_is_an_image_and_the_error_says_how_to_pass_vectors(any_client, dim):
    c = any_client
    c.create_gallery("g")
    wide = np.random.default_rng(0).normal(size=(30, dim + 1)).astype(np.float32)
    with pytest.raises(InvalidArgument, match=rf"30 client ids for 1 items; a 2-D float32 array of shape "
                                              rf"\(30, {dim + 1}\) is read as one image: pass n vectors as an "
                                              rf"\(n, dim\) float32 matrix whose width is {dim}"):
        c.enroll("g", "x", wide, ids=[f"w{i}" for i in range(30)])
    pixels = np.zeros((30, dim), np.uint8)                          # uint8: an image, whatever its width
    with pytest.raises(InvalidArgument, match="is read as one image"):
        c.enroll("g", "x", pixels, ids=[f"p{i}" for i in range(30)])
    assert c.enroll("g", "x", pixels).stored[0].label == "x"        # enrolled as one image
