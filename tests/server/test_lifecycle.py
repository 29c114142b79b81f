"""Shutdown with a call in flight, deadlines, restarts (same model, another model), and `twinsearch serve`
as a process: the printed port, environment variables, SIGTERM and SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from twinsearch.client import convert as c
from twinsearch.server.app import start_server
from twinsearch.server.engine import Engine
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc

from .conftest import TIMEOUT, glyph, png, settings_for
from .test_batching import GatedModel, Submissions


def probe(cls: int) -> pb.Input:
    return pb.Input(image=pb.Image(encoded=png(glyph(cls))))


def stub_for(address: str):
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    return channel, twinsearch_pb2_grpc.TwinSearchStub(channel)


def _embed(stub, n: int, seed: int, **kw):
    return stub.Embed.future(pb.EmbedRequest(images=[pb.Image(encoded=png(glyph(seed)))] * n), **kw)


def test_shutdown_finishes_the_call_in_flight(tmp_path, model_path):
    settings = settings_for(tmp_path, model_path)
    engine = Engine.open(settings.data_dir, settings.model_path, settings.engine)
    engine.model = GatedModel(engine.model)
    running = start_server(settings, engine=engine)
    channel, stub = stub_for(running.address)
    try:
        stub.CreateGallery(pb.CreateGalleryRequest(name="kept"), timeout=TIMEOUT)
        stub.Enroll(pb.EnrollRequest(gallery="kept", items=[pb.EnrollItem(label="a", input=probe(1))]),
                    timeout=TIMEOUT)
        engine.model.gate = threading.Event()
        engine.model.entered.clear()
        in_flight = stub.Identify.future(pb.IdentifyRequest(gallery="kept", probes=[probe(1)]), timeout=TIMEOUT)
        assert engine.model.entered.wait(TIMEOUT)  # the call is inside the encoder, held there
        stopper = threading.Thread(target=running.stop, kwargs={"grace": TIMEOUT})
        stopper.start()
        # Poll until the stopping server refuses new calls (the call in flight is still held). A call
        # that arrives just as gRPC's server stops may be cancelled instead; the next is refused.
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                stub.Info(pb.InfoRequest(), timeout=5)
            except grpc.RpcError as refused:
                if refused.code() == grpc.StatusCode.UNAVAILABLE:
                    break
                assert refused.code() == grpc.StatusCode.CANCELLED, refused
            assert time.monotonic() < deadline, "the server kept accepting calls while stopping"
            time.sleep(0.01)
        assert not in_flight.done()
        engine.model.gate.set()
        answer = in_flight.result(timeout=TIMEOUT)
        assert answer.results[0].label == "a"
        stopper.join(TIMEOUT)
        assert not stopper.is_alive() and running.wait(0)
    finally:
        if engine.model.gate is not None:
            engine.model.gate.set()
        channel.close()
        running.stop()
    assert any((tmp_path / "snapshots").iterdir())  # index snapshots written at shutdown


def test_deadline_expired_in_the_queue_stops_the_work(tmp_path, model_path):
    settings = settings_for(tmp_path, model_path)
    engine = Engine.open(settings.data_dir, settings.model_path, settings.engine)
    engine.model = GatedModel(engine.model)
    engine.model.gate = threading.Event()
    running = start_server(settings, engine=engine)
    channel, stub = stub_for(running.address)
    try:
        busy = _embed(stub, 1, 1, timeout=TIMEOUT)
        assert engine.model.entered.wait(TIMEOUT)  # busy holds the encoder
        with pytest.raises(grpc.RpcError) as info:
            stub.Embed(pb.EmbedRequest(images=[pb.Image(encoded=png(glyph(2)))] * 3), timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        engine.model.gate.set()
        busy.result(timeout=TIMEOUT)
        # One encoder thread, first in first out: once a later call is answered, the expired one was
        # dropped or run.
        _embed(stub, 2, 3, timeout=TIMEOUT).result(timeout=TIMEOUT)
        assert engine.model.batches == [1, 2]  # the expired call's three images never ran
        assert stub.Info(pb.InfoRequest(), timeout=TIMEOUT).api_version == "v1"
    finally:
        engine.model.gate.set()
        channel.close()
        running.stop(grace=1.0)


def test_cancelled_call_never_reaches_the_encoder(tmp_path, model_path):
    settings = settings_for(tmp_path, model_path)
    engine = Engine.open(settings.data_dir, settings.model_path, settings.engine)
    engine.model = GatedModel(engine.model)
    engine.model.gate = threading.Event()
    queued = Submissions(engine._encoder, 1)  # busy runs at once on its own thread; doomed is queued
    running = start_server(settings, engine=engine)
    channel, stub = stub_for(running.address)
    try:
        busy = _embed(stub, 1, 1, timeout=TIMEOUT)
        assert engine.model.entered.wait(TIMEOUT)  # busy holds the encoder
        doomed = _embed(stub, 5, 2, timeout=TIMEOUT)
        assert queued.all_queued.wait(TIMEOUT)  # doomed waits in the encoder's queue
        doomed.cancel()
        # The server notices the cancelled call and withdraws its queued work.
        deadline = time.monotonic() + TIMEOUT
        while not queued.futures[0].cancelled():
            assert time.monotonic() < deadline, "the cancelled call's work stayed queued"
            time.sleep(0.01)
        engine.model.gate.set()
        busy.result(timeout=TIMEOUT)
        _embed(stub, 2, 3, timeout=TIMEOUT).result(timeout=TIMEOUT)  # everything queued before it is done
        assert engine.model.batches == [1, 2]
    finally:
        engine.model.gate.set()
        channel.close()
        running.stop(grace=1.0)


def test_restart_keeps_every_gallery(tmp_path, model_path, other_model_path):
    first = start_server(settings_for(tmp_path, model_path))
    channel, stub = stub_for(first.address)
    try:
        stub.CreateGallery(pb.CreateGalleryRequest(name="exact"), timeout=TIMEOUT)
        stub.CreateGallery(pb.CreateGalleryRequest(name="graph", index=pb.INDEX_KIND_HNSW, threshold=0.3,
                                                   scoring=pb.SCORING_MEAN_OF_K, mean_k=2), timeout=TIMEOUT)
        for name in ("exact", "graph"):
            items = [pb.EnrollItem(label=f"c{k}", input=probe(k), client_id=str(k)) for k in range(8)]
            stub.Enroll(pb.EnrollRequest(gallery=name, items=items), timeout=TIMEOUT)
        stub.Delete(pb.DeleteRequest(gallery="exact", label="c7"), timeout=TIMEOUT)
        before = stub.ListGalleries(pb.ListGalleriesRequest(), timeout=TIMEOUT)
        request = pb.IdentifyRequest(gallery="exact", probes=[probe(3), probe(7)], k=3)
        answer_before = stub.Identify(request, timeout=TIMEOUT)
    finally:
        channel.close()
        first.stop(grace=1.0)

    second = start_server(settings_for(tmp_path, model_path))
    channel, stub = stub_for(second.address)
    try:
        assert stub.ListGalleries(pb.ListGalleriesRequest(), timeout=TIMEOUT) == before
        assert stub.Identify(request, timeout=TIMEOUT) == answer_before
        again = stub.Enroll(pb.EnrollRequest(gallery="graph", items=[pb.EnrollItem(label="c1", input=probe(1),
                                                                                   client_id="1")]),
                            timeout=TIMEOUT)
        assert not again.items[0].created
    finally:
        channel.close()
        second.stop(grace=1.0)

    # The same folder served by another model: its galleries are refused, not mixed.
    third = start_server(settings_for(tmp_path, other_model_path))
    channel, stub = stub_for(third.address)
    try:
        for call, req in ((stub.Identify, request),
                          (stub.Enroll, pb.EnrollRequest(gallery="exact", items=[pb.EnrollItem(label="x",
                                                                                              input=probe(1))]))):
            with pytest.raises(grpc.RpcError) as info:
                call(req, timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "bound to model" in info.value.details()
        pair = [pb.Pair(a=probe(1), b=probe(2))]
        with pytest.raises(grpc.RpcError) as info:  # this model has no calibration: no default threshold
            stub.Verify(pb.VerifyRequest(pairs=pair), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        explicit = stub.Verify(pb.VerifyRequest(pairs=pair, threshold=pb.ThresholdOptions(threshold=0.5)),
                               timeout=TIMEOUT)
        assert not explicit.results[0].HasField("probability")
    finally:
        channel.close()
        third.stop(grace=1.0)


def serve_process(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start `twinsearch serve` and return it with the address it printed."""
    cmd = [sys.executable, "-m", "twinsearch.client.cli", "serve", *args]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    line = process.stdout.readline()
    match = re.match(r"twinsearch serving on (\S+:\d+)$", line.strip())
    if match is None:
        process.kill()
        raise AssertionError(f"unexpected first line {line!r}; stderr: {process.stderr.read()}")
    return process, match.group(1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_command_stops_gracefully_on_signals(tmp_path, model_path, sig):
    process, address = serve_process(
        ["--model", str(model_path), "--address", "127.0.0.1:0", "--torch-threads", "1"],
        env={"TWINSEARCH_DATA_DIR": str(tmp_path / "data"), "TWINSEARCH_TOKEN": "tok", "TWINSEARCH_MAX_K": "7"})
    try:
        assert not address.endswith(":0")
        channel, stub = stub_for(address)
        with channel:
            auth = (("authorization", "Bearer tok"),)
            stub.CreateGallery(pb.CreateGalleryRequest(name="g"), metadata=auth, timeout=TIMEOUT)
            stub.Enroll(pb.EnrollRequest(gallery="g", items=[pb.EnrollItem(label="a", input=probe(1))]),
                        metadata=auth, timeout=TIMEOUT)
            with pytest.raises(grpc.RpcError) as info:  # TWINSEARCH_MAX_K=7 reached the engine
                stub.Identify(pb.IdentifyRequest(gallery="g", probes=[probe(1)], k=8), metadata=auth, timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            info = c.server_info_from_pb(stub.Info(pb.InfoRequest(), metadata=auth, timeout=TIMEOUT))
            assert info.galleries == ("g",)
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "twinsearch stopped" in out
        assert (tmp_path / "data" / "gallery.sqlite3").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_command_reports_a_bad_model(tmp_path):
    bogus = tmp_path / "bogus.tsm"
    bogus.write_bytes(b"not a model")
    result = subprocess.run([sys.executable, "-m", "twinsearch.client.cli", "serve", "--model", str(bogus),
                             "--data-dir", str(tmp_path / "d"), "--address", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "not a twinsearch model file" in result.stderr


def test_address_in_use_and_store_in_use_are_refused(tmp_path, model_path, server):
    import dataclasses

    from twinsearch.client.errors import FailedPrecondition

    taken = settings_for(tmp_path / "other", model_path)
    with pytest.raises(OSError):
        start_server(dataclasses.replace(taken, address=server.address))
    again = start_server(taken)  # the failed start released the data folder it had opened
    try:
        with pytest.raises(FailedPrecondition):
            start_server(taken)  # one process, one server per data folder
    finally:
        again.stop(grace=1.0)


def test_default_model_when_none_is_given(tmp_path):
    from twinsearch.encoder.model import default_model_path

    if not default_model_path().exists():
        pytest.skip("the default model is not shipped yet")
    running = start_server(settings_for(tmp_path, None))
    channel, stub = stub_for(running.address)
    try:
        info = stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
        assert info.model.fingerprint and info.model.dim > 0
    finally:
        channel.close()
        running.stop(grace=1.0)
