"""The gRPC client against a real server on a free localhost port (a tiny random model)."""

import io
import socket
import threading
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from twinsearch.client import (
    AlreadyExists,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    GalleryInfo,
    Identification,
    IndexKind,
    InvalidArgument,
    NotFound,
    Scoring,
    ThresholdSource,
    TwinsearchError,
    Unauthenticated,
    Unavailable,
    Verification,
)


def test_info(client, dim):
    info = client.info()
    assert info.api_version == "v1"
    assert info.model.name == "tiny-test" and info.model.dim == dim
    assert {p.name for p in info.model.thresholds} == {"eer", "far_1", "far_0_1"}
    assert info.model.default_threshold is ThresholdSource.MODEL_EER
    assert info.galleries == ()


def test_gallery_lifecycle(client, unit_vectors, dim):
    g = client.create_gallery("staff", index="hnsw", scoring="prototype", threshold=0.5)
    assert isinstance(g, GalleryInfo)
    assert (g.name, g.index.kind, g.scoring, g.threshold, g.dim) == ("staff", IndexKind.HNSW, Scoring.PROTOTYPE, 0.5, dim)
    with pytest.raises(AlreadyExists):
        client.create_gallery("staff")
    assert client.create_gallery("staff", exist_ok=True) == g
    assert [x.name for x in client.galleries()] == ["staff"]
    assert client.get_gallery("staff") == g
    assert client.info().galleries == ("staff",)
    client.enroll("staff", "a", list(unit_vectors(3, seed=1)))
    assert client.delete_gallery("staff") == 3
    with pytest.raises(NotFound):
        client.get_gallery("staff")


def test_every_kind_of_image_gives_the_same_vector(client, tmp_path, png):
    data = png(7)
    path = tmp_path / "x.png"
    path.write_bytes(data)
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    as_path, as_str, as_bytes, as_pil, as_array = client.embed(
        [path, str(path), data, Image.open(io.BytesIO(data)), pixels])
    for other in (as_str, as_bytes, as_pil):
        assert np.array_equal(as_path, other)
    np.testing.assert_allclose(as_array, as_path, atol=1e-5)
    assert as_path.dtype == np.float32 and abs(np.linalg.norm(as_path) - 1.0) < 1e-5


def test_single_item_in_single_result_out(client, png, unit_vectors, dim):
    client.create_gallery("g")
    vectors = unit_vectors(4, seed=2)
    result = client.enroll("g", ["a", "b", "c", "d"], list(vectors), ids=["a", "b", "c", "d"])
    assert result.ids == tuple(e.id for e in result.stored) and len(result.ids) == 4
    one = client.identify("g", vectors[1], k=2)
    assert isinstance(one, Identification) and one.label == "b" and one.known
    many = client.identify("g", [vectors[1], vectors[2]], k=2)
    assert [r.label for r in many] == ["b", "c"]
    assert len(one.candidates) == 2 and one.margin is not None and one.margin >= 0
    assert client.embed(png(1)).shape == (dim,) and client.embed([png(1)]).shape == (1, dim)
    assert isinstance(client.verify(png(1), png(2)), Verification)
    assert len(client.verify([png(1), png(3)], [png(2), png(4)])) == 2
    neighbors = client.search("g", vectors[0], k=3)
    assert [n.label for n in neighbors][0] == "a" and len(neighbors) == 3
    assert len(client.search("g", [vectors[0]], k=3)) == 1


def test_vectors_replace_images(client, png):
    client.create_gallery("g")
    images = [png(10), png(11)]
    client.enroll("g", ["x", "y"], images)
    by_image = client.identify("g", images, k=2)
    by_vector = client.identify("g", list(client.embed(images)), k=2)
    assert [r.label for r in by_image] == [r.label for r in by_vector]
    for a, b in zip(by_image, by_vector, strict=True):
        # The same two images in one call embed as they did in embed(): the distances are then the
        # same bits (exact, float64 from the stored float32 vectors), a probe's own image at 0.0.
        assert [(c.label, c.distance) for c in a.candidates] == [(c.label, c.distance) for c in b.candidates]
        assert a.candidates[0].distance == 0.0
    v = client.embed(images)
    assert client.verify(v[0], images[1]).distance == pytest.approx(client.verify(images[0], images[1]).distance,
                                                                     abs=1e-5)


def test_enroll_is_idempotent_with_ids_and_keeps_metadata(client, unit_vectors):
    client.create_gallery("g")
    vectors = unit_vectors(2, seed=3)
    first = client.enroll("g", "alice", list(vectors), ids=["a/1", "a/2"], metadata={"team": "red"})
    again = client.enroll("g", "alice", list(vectors), ids=["a/1", "a/2"])
    assert all(e.created for e in first.stored) and not any(e.created for e in again.stored)
    assert first.ids == again.ids
    assert client.get_gallery("g").item_count == 2
    nearest = client.search("g", vectors[0], k=1)[0]
    assert (nearest.client_id, nearest.label, nearest.metadata) == ("a/1", "alice", {"team": "red"})


def test_thresholds_scoring_and_restriction(client, unit_vectors):
    client.create_gallery("g")
    vectors = unit_vectors(6, seed=4)
    client.enroll("g", ["a", "a", "b", "b", "c", "c"], list(vectors))
    probe = vectors[0]
    mixed = probe + 0.5 * vectors[3]
    strict = client.identify("g", mixed / np.linalg.norm(mixed), threshold=0.0)
    assert strict.label is None and strict.threshold.source is ThresholdSource.REQUEST
    far = client.identify("g", probe, target_far=0.01)
    assert far.threshold.source is ThresholdSource.REQUEST_FAR and far.label == "a"
    only_b = client.identify("g", probe, labels=["b", "c"], k=5)
    assert {c.label for c in only_b.candidates} <= {"b", "c"}
    proto = client.identify("g", probe, scoring="prototype")
    nearest = client.identify("g", probe, scoring=Scoring.NEAREST)
    assert proto.candidates[0].distance >= nearest.candidates[0].distance
    yes, no = client.verify_class("g", [probe, probe], ["a", "b"])
    assert yes.same and not no.same
    both = client.verify_class("g", [vectors[0], vectors[1]], "a")
    assert [v.same for v in both] == [True, True]


def test_delete_and_classes(client, unit_vectors):
    client.create_gallery("g")
    vectors = unit_vectors(7, seed=5)
    result = client.enroll("g", ["a", "a", "b", "b", "c", "d", "e"], list(vectors),
                           ids=[f"i{i}" for i in range(7)])
    assert [(c.label, c.count) for c in client.classes("g")] == [("a", 2), ("b", 2), ("c", 1), ("d", 1), ("e", 1)]
    page = client.class_page("g", page_size=2)
    assert [c.label for c in page.classes] == ["a", "b"] and page.next_page_token
    assert len(client.classes("g", page_size=2)) == 5
    assert client.delete("g", ids=result.ids[0]) == 1
    assert client.delete("g", client_ids=["i1"]) == 1
    assert client.delete("g", label="b") == 2
    with pytest.raises(NotFound):
        client.delete("g", label="nobody")
    with pytest.raises(InvalidArgument):
        client.delete("g")
    assert [c.label for c in client.classes("g")] == ["c", "d", "e"]


def test_find_items_names_the_stored_client_ids(client, unit_vectors):
    client.create_gallery("g")
    result = client.enroll("g", ["a", "b", "c"], list(unit_vectors(3, seed=4)), ids=["x", "y", "z"])
    # More ids than one call may hold (the server's max_batch): the client splits them.
    asked = ["z", *(f"absent-{i}" for i in range(2500)), "x", "x"]
    found = client.find_items("g", asked)
    assert [(f.client_id, f.label, f.id, f.created) for f in found] == [
        ("z", "c", result.ids[2], False), ("x", "a", result.ids[0], False)]
    assert client.find_items("g", []) == []
    with pytest.raises(NotFound):
        client.find_items("nope", ["x"])


def test_unknown_item_ids_are_not_an_error(client, unit_vectors):
    client.create_gallery("g")
    client.enroll("g", "a", list(unit_vectors(1, seed=6)), ids=["x"])
    assert client.delete("g", ids=[10_000]) == 0
    assert client.delete("g", client_ids=["x", "never-stored"]) == 1


def test_errors_are_the_library_s_own(client, png, dim):
    with pytest.raises(NotFound) as info:
        client.identify("nowhere", png(1))
    err = info.value
    assert isinstance(err, TwinsearchError) and not isinstance(err, grpc.RpcError)
    assert err.code == "NOT_FOUND" and "nowhere" in err.details
    client.create_gallery("g")
    with pytest.raises(FailedPrecondition):
        client.identify("g", png(1))
    with pytest.raises(InvalidArgument, match=r"images\[1\]"):
        client.embed([png(1), b"not an image"])
    with pytest.raises(InvalidArgument, match="dimension"):
        client.enroll("g", "a", np.ones(dim + 1, np.float32))
    with pytest.raises(InvalidArgument):
        client.create_gallery("bad name!")
    failed = client.enroll("g", "a", [png(1), b"junk"], ids=["ok", "bad"], skip_invalid=True)
    assert len(failed.stored) == 1 and failed.failed[0].index == 1 and failed.failed[0].client_id == "bad"


def test_deadline(client, png):
    slow = Client(client.address, timeout=1e-4)
    with pytest.raises(DeadlineExceeded):
        slow.embed([png(i) for i in range(32)])
    slow.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unavailable_after_retries_within_the_deadline():
    c = Client(f"127.0.0.1:{_free_port()}", timeout=1.0, retries=3, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        c.info()
    assert time.monotonic() - started < 3.0
    c.close()


def test_retries_until_the_server_is_up(tmp_path, tiny_model):
    from twinsearch.server.app import ServerSettings, start_server

    port = _free_port()
    holder = {}

    def start_later():
        time.sleep(0.5)
        holder["server"] = start_server(ServerSettings(data_dir=tmp_path / "d", model_path=tiny_model,
                                                       address=f"127.0.0.1:{port}"))

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=30.0, retries=20, backoff=0.1, max_backoff=0.5) as c:
            assert c.info().api_version == "v1"
    finally:
        thread.join()
        holder["server"].stop(grace=1.0)


def test_token(tmp_path, tiny_model):
    from twinsearch.server.app import ServerSettings, start_server

    running = start_server(ServerSettings(data_dir=tmp_path / "d", model_path=tiny_model, address="127.0.0.1:0",
                                          token="s3cret"))
    try:
        with Client(running.address) as anonymous, pytest.raises(Unauthenticated):
            anonymous.info()
        with Client(running.address, token="wrong") as wrong, pytest.raises(Unauthenticated):
            wrong.galleries()
        with Client(running.address, token="s3cret") as good:
            assert good.info().api_version == "v1"
    finally:
        running.stop(grace=1.0)


def test_one_client_many_threads(client, png):
    """Concurrent calls on one Client (which the server batches together) answer as sequential ones do."""
    from concurrent.futures import ThreadPoolExecutor

    client.create_gallery("g")
    images = [png(200 + i) for i in range(12)]
    client.enroll("g", [f"c{i}" for i in range(12)], images)
    sequential = [client.identify("g", image, k=3) for image in images]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(lambda image: client.identify("g", image, k=3), images))
    for i, (a, b) in enumerate(zip(sequential, concurrent, strict=True)):
        # Each probe is an enrolled image: its own class is first by far, whatever the batch it ran in.
        assert a.label == b.label == f"c{i}"
        assert [c.label for c in a.candidates] == [c.label for c in b.candidates]
        # The encoder's float32 output can differ in its last bits with the batch an image ran in
        # (kernels are chosen by batch size): about 1e-7 in distance, never more than 1e-6.
        np.testing.assert_allclose([c.distance for c in a.candidates], [c.distance for c in b.candidates],
                                   rtol=0, atol=1e-6)
    # Given the vectors, the distances are exact (float64 from the stored float32 vectors): concurrent
    # calls, whatever the search batcher gathered, give the same bits as sequential ones.
    vectors = client.embed(images)
    sequential = [client.identify("g", v, k=3) for v in vectors]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(lambda v: client.identify("g", v, k=3), vectors))
    for a, b in zip(sequential, concurrent, strict=True):
        assert [(c.label, c.distance) for c in a.candidates] == [(c.label, c.distance) for c in b.candidates]


def test_a_call_waits_for_a_server_still_starting_within_its_deadline(tmp_path, tiny_model):
    """With the default retries (about 2 s of backoff), a server that comes up 4 s later is still
    answered: the call waits for the channel to be ready, within its 30 s deadline."""
    from twinsearch.server.app import ServerSettings, start_server

    port = _free_port()
    holder = {}
    calling = threading.Event()

    def start_late():
        calling.wait(10)
        time.sleep(4.0)  # the server is late on purpose: longer than the retries' backoff
        holder["server"] = start_server(ServerSettings(data_dir=tmp_path / "d", model_path=tiny_model,
                                                       address=f"127.0.0.1:{port}"))

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=30.0) as c:
            calling.set()
            assert c.info().api_version == "v1"
    finally:
        thread.join()
        holder["server"].stop(grace=1.0)


def test_nothing_listening_is_unavailable_and_a_short_deadline_is_deadline_exceeded(client, png):
    with Client(f"127.0.0.1:{_free_port()}", timeout=1.0) as c, pytest.raises(Unavailable, match="no server reachable"):
        c.galleries()
    with Client(client.address, timeout=1e-4) as fresh, pytest.raises(DeadlineExceeded):
        fresh.embed([png(i) for i in range(32)])


def test_a_gallery_threshold_from_an_operating_point(client):
    far_1 = next(p for p in client.info().model.thresholds if p.name == "far_1")
    assert client.operating_point("far_1") == far_1
    assert client.create_gallery("g", threshold="far_1").threshold == far_1.distance
    with pytest.raises(InvalidArgument, match="no operating point 'far_2'.*eer, far_1, far_0_1"):
        client.create_gallery("h", threshold="far_2")
