"""Arguments an application may get wrong, and a client used after close(): both clients answer with the
library's own exceptions, alike (never a TypeError, ValueError or UnicodeEncodeError from protobuf or numpy),
and nothing is stored or created by a call that fails."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from twinsearch.client import FailedPrecondition, InvalidArgument
from twinsearch.client.types import IndexSpec
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc


@pytest.fixture
def gallery(any_client, png):
    any_client.create_gallery("g")
    any_client.enroll("g", ["a", "b"], [png(0), png(1)], ids=["a0", "b0"])
    return any_client


def test_a_gallery_name_with_a_final_newline_is_not_a_name(any_client, server):
    with pytest.raises(InvalidArgument, match=r"gallery name 'g\\n' is not valid"):
        any_client.create_gallery("g\n")
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as err:
        twinsearch_pb2_grpc.TwinSearchStub(channel).CreateGallery(pb.CreateGalleryRequest(name="x\n"), timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not any_client.galleries()


@pytest.mark.parametrize("call, field", [
    (lambda c, p: c.get_gallery(5), "name"),
    (lambda c, p: c.create_gallery("\ud800"), "name"),
    (lambda c, p: c.cancel_migration(3), "name"),
    (lambda c, p: c.migrate_gallery("g", 5), "model"),
    (lambda c, p: c.verify(p, p, model=5), "model"),
    (lambda c, p: c.embed(p, model="\ud800"), "model"),
    (lambda c, p: c.identify("g", p, labels=[1]), "labels[0]"),
    (lambda c, p: c.search("g", p, labels=["a", "\udfff"]), "labels[1]"),
    (lambda c, p: c.verify_class("g", [p, p], ["a", None]), "queries[1].label"),
    (lambda c, p: c.find_items("g", ["a0", "\ud800"]), "client_ids[1]"),
    (lambda c, p: c.gallery_page(page_token=5), "page_token"),
    (lambda c, p: c.class_page("g", page_token="\ud800"), "page_token"),
    (lambda c, p: c.enroll(5, "a", p), "gallery"),
])
def test_names_and_labels_that_cannot_travel(gallery, png, call, field):
    with pytest.raises(InvalidArgument) as err:
        call(gallery, png(2))
    assert err.value.field == field
    assert gallery.get_gallery("g").item_count == 2


@pytest.mark.parametrize("call", [
    lambda c, p: c.verify_class("g", p, 5),
    lambda c, p: c.enroll("g", 5, p),
    lambda c, p: c.enroll("g", "a", p, ids=7),
])
def test_one_value_that_is_not_a_label_or_a_list(gallery, png, call):
    with pytest.raises(InvalidArgument, match="must be one value for all items or a list of one per item, got int"):
        call(gallery, png(2))


def test_thresholds_are_numbers_numpy_s_included(gallery, png):
    assert gallery.update_gallery("g", threshold=np.float32(0.5), cohort_threshold=np.float64(0.75)).threshold == 0.5
    assert gallery.create_gallery("h", cohort_threshold=np.float32(0.5)).cohort_threshold == 0.5
    assert gallery.identify("g", png(2), threshold=np.float32(0.25)).threshold.distance == 0.25
    for call in (lambda: gallery.identify("g", png(2), threshold="0.5"),
                 lambda: gallery.identify("g", png(2), target_far="x"),
                 lambda: gallery.verify(png(2), png(3), threshold=True),
                 lambda: gallery.verify_class("g", png(2), "a", threshold=[0.5]),
                 lambda: gallery.create_gallery("i", threshold=True)):
        with pytest.raises(InvalidArgument, match="must be a number"):
            call()
    assert [g.name for g in gallery.galleries()] == ["g", "h"]


def test_flags_are_true_or_false(gallery, png):
    with pytest.raises(InvalidArgument, match="skip_invalid must be True or False, got 'no'"):
        gallery.enroll("g", "c", png(2), skip_invalid="no")
    with pytest.raises(InvalidArgument, match="skip_invalid must be True or False"):
        gallery.identify("g", png(2), skip_invalid="yes")
    with pytest.raises(InvalidArgument, match="keep_images must be True or False, got 'no'"):
        gallery.create_gallery("h", keep_images="no")
    assert gallery.get_gallery("g").item_count == 2 and len(gallery.galleries()) == 1


@pytest.mark.parametrize("index, params, field", [
    ("ivf", {"nlist": 2**40}, "params.nlist"),
    ("hnsw", {"hnsw_m": "8"}, "params.hnsw_m"),
    ("hnsw", {"ef_search": 2.5}, "params.ef_search"),
    (IndexSpec(kind="ivf", nprobe=-1), None, "params.nprobe"),
])
def test_index_parameters_outside_the_wire_s_int32(any_client, index, params, field):
    with pytest.raises(InvalidArgument, match="must be an integer from 0 to 2147483647") as err:
        any_client.create_gallery("g", index=index, params=params)
    assert err.value.field == field
    with pytest.raises(InvalidArgument, match="unknown index kind 'bogus'"):
        any_client.create_gallery("g", index=IndexSpec(kind="bogus"))
    assert not any_client.galleries()


@pytest.mark.parametrize("params", [{"ef_search": 2**31 - 1}, {"ef_construction": 16_385}])
def test_hnsw_beam_widths_that_would_make_every_search_take_seconds(any_client, params):
    with pytest.raises(InvalidArgument, match="ef_search <= 16,384"):
        any_client.create_gallery("g", index="hnsw", params=params)
    assert any_client.create_gallery("g", index="hnsw", params={"ef_search": 16_384}).index.ef_search == 16_384


@pytest.mark.parametrize("array, words", [
    (np.array([["a"] * 28] * 28, dtype=object), "an image array must hold numbers, got dtype object"),
    (np.zeros((28, 28), dtype=np.complex64), "an image array must hold numbers, got dtype complex64"),
    (np.array(["x"] * 16, dtype=object), "a vector must hold numbers, got dtype object"),
    (np.full((28, 28), 200, dtype=np.int64), "an image array of int64 holds values from 200 to 200: give pixels as "
                                             "uint8 or uint16"),
])
def test_arrays_that_hold_no_pixels(gallery, array, words):
    with pytest.raises(InvalidArgument, match=words) as err:
        gallery.identify("g", array)
    assert err.value.field == "probes[0]"
    assert gallery.identify("g", np.eye(28, dtype=np.int64)).threshold is not None  # 0 and 1: float pixels


def test_a_closed_client_refuses_every_call_and_sends_nothing(server, client, png):
    from twinsearch.client import Client

    client.create_gallery("g")
    closed = Client(server.address, timeout=20.0)
    with closed:
        closed.info()
    for call in (closed.info, lambda: closed.enroll("g", "a", png(0)), lambda: closed.enroll_folder("g", ".")):
        with pytest.raises(FailedPrecondition, match="is closed: open a new one"):  # not Unavailable: no retrying
            call()
    with closed, pytest.raises(FailedPrecondition, match="is closed"):  # a context manager entered again
        closed.get_gallery("g")
    assert client.get_gallery("g").item_count == 0


def test_a_closed_local_client_refuses_every_call_alike(tmp_path, tiny_model, local_client):
    from twinsearch.client import LocalClient

    with LocalClient(tmp_path / "data", model=tiny_model) as own:
        own.create_gallery("g")
    wrapping = LocalClient(engine=local_client.engine)  # another's engine: left open, but this client is closed
    wrapping.close()
    for closed in (own, wrapping):
        for call in (closed.info, lambda c=closed: c.get_gallery("g")):
            with pytest.raises(FailedPrecondition, match="is closed: open a new one"):
                call()
        closed.close()  # closing again is no error
    assert local_client.info().model


def test_an_empty_client_id_is_refused_not_taken_as_none(gallery, png):
    """The wire cannot tell an empty client id from none: taken as none, a re-run stored the image again."""
    with pytest.raises(InvalidArgument, match=r"items\[1\].client_id is empty: give None") as err:
        gallery.enroll("g", "c", [png(2), png(3)], ids=["c0", ""])
    assert err.value.field == "items[1].client_id"
    assert gallery.enroll("g", "c", [png(2)], ids=[None]).stored[0].client_id is None
    assert gallery.get_gallery("g").item_count == 3
