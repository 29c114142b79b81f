"""Values the wire cannot carry, or that no item can have, are InvalidArgument from both clients alike
(never a bare ValueError, TypeError or UnicodeEncodeError from the protobuf layer, nor INTERNAL from the
server); a client left open does not keep the program from ending."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest

from twinsearch.client import InvalidArgument
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc


@pytest.fixture
def gallery(any_client, png):
    any_client.create_gallery("g")
    any_client.enroll("g", "a", [png(0), png(1)], ids=["a0", "a1"])
    return any_client


@pytest.mark.parametrize("k", [0, 2**31, 10**12])
def test_k_the_wire_cannot_carry(gallery, png, k):
    with pytest.raises(InvalidArgument, match=r"k must be an integer from 1 to 2147483647"):
        gallery.identify("g", png(2), k=k)
    with pytest.raises(InvalidArgument, match=r"k must be an integer from 1 to 2147483647"):
        gallery.search("g", png(2), k=k)


@pytest.mark.parametrize("bad", [-1, 0, 2**63, 2**64 - 1])
def test_ids_no_item_can_have(gallery, bad):
    with pytest.raises(InvalidArgument, match=r"ids\[0\] must be a stored id"):
        gallery.delete("g", ids=[bad])
    assert gallery.get_gallery("g").item_count == 2


@pytest.mark.parametrize("metadata, words", [
    ({"k": 1}, r"items\[0\].metadata\['k'\] must be a string, got int"),
    ({1: "v"}, r"items\[0\].metadata key must be a string, got int"),
    ({"k": {"nested": "x"}}, r"must be a string, got dict"),
    ("not a mapping", r"items\[0\].metadata must map strings to strings"),
])
def test_metadata_that_is_not_strings(gallery, png, metadata, words):
    with pytest.raises(InvalidArgument, match=words):
        gallery.enroll("g", "b", [png(3)], metadata=metadata if not isinstance(metadata, str) else [metadata])


def test_text_that_cannot_be_encoded(gallery, png):
    with pytest.raises(InvalidArgument, match=r"items\[0\].label is not valid text"):
        gallery.enroll("g", "\ud800", [png(3)])
    with pytest.raises(InvalidArgument, match=r"items\[0\].client_id is not valid text"):
        gallery.enroll("g", "b", [png(3)], ids=["x\udfff"])
    with pytest.raises(InvalidArgument, match=r"client_ids\[0\] is not valid text"):
        gallery.delete("g", client_ids=["\ud800"])
    assert gallery.get_gallery("g").item_count == 2


def test_raw_stub_ids_past_int64_are_invalid_argument(server, png):
    with grpc.insecure_channel(server.address) as channel:
        stub = twinsearch_pb2_grpc.TwinSearchStub(channel)
        stub.CreateGallery(pb.CreateGalleryRequest(name="g"))
        with pytest.raises(grpc.RpcError) as err:
            stub.Delete(pb.DeleteRequest(gallery="g", ids=[2**64 - 1]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "must be a stored id" in err.value.details()


@pytest.mark.parametrize("shape", [[2**31, 2**31, 4], [2**32 - 1, 2**32 - 1, 3], [2**21, 2**21]])
def test_raw_images_whose_size_overflows_are_invalid_argument(server, shape):
    with grpc.insecure_channel(server.address) as channel:
        stub = twinsearch_pb2_grpc.TwinSearchStub(channel)
        raw = pb.RawImage(dtype="uint8", shape=shape, data=b"")
        with pytest.raises(grpc.RpcError) as err:
            stub.Embed(pb.EmbedRequest(images=[pb.Image(raw=raw)]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        expected = int(np.prod([float(s) for s in shape]))  # the true count, in floats: no wrap-around
        assert "needs " in err.value.details() and "-" not in err.value.details().split("needs ")[1].split()[0]
        assert int(err.value.details().split("needs ")[1].split()[0]) == pytest.approx(expected, rel=1e-9)


def test_a_client_left_open_after_unavailable_lets_the_program_end(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = textwrap.dedent(f"""
        from twinsearch.client import Client, Unavailable
        c = Client("127.0.0.1:{port}", timeout=1)
        try:
            c.info()
        except Unavailable:
            print("unavailable", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "unavailable" in done.stdout, done.stderr


def test_a_target_far_below_what_calibration_measures_reports_the_rate_measured(any_client, png):
    tiny = any_client.verify(png(0), png(1), target_far=1e-9).threshold
    finer = any_client.verify(png(0), png(1), target_far=1e-7).threshold
    assert tiny.distance == finer.distance  # both below the curve: its smallest rate's distance
    smallest = tiny.far
    assert smallest > 1e-7 and finer.far == smallest  # the rate measured there, not the one asked
    usual = any_client.verify(png(0), png(1), target_far=0.01).threshold
    assert usual.far == pytest.approx(0.01) and usual.distance > tiny.distance


@pytest.mark.parametrize("timeout", [0, -1, 1e10, float("inf")])
def test_a_timeout_grpc_cannot_carry_is_refused(timeout):
    from twinsearch.client import Client

    with pytest.raises(ValueError, match="timeout must be > 0 and at most 1e\\+09 seconds"):
        Client("127.0.0.1:1", timeout=timeout)


def test_an_empty_gallery_says_to_enroll_first(any_client, png):
    from twinsearch.client.errors import FailedPrecondition

    any_client.create_gallery("nothing-yet")
    for call in (lambda: any_client.identify("nothing-yet", png(0)), lambda: any_client.search("nothing-yet", png(0))):
        with pytest.raises(FailedPrecondition, match="gallery 'nothing-yet' is empty: enroll images into it first"):
            call()
