"""`twinsearch serve --encoders ray`: the same answers as local encoding, replicas that die are
replaced by the others, a cluster that cannot be reached is one line at start."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest

from twinsearch.client import Client

from .conftest import PYTHON, ROOT, glyph, png, server_settings


@pytest.fixture(scope="module")
def ray_server(ray_cluster, tmp_path_factory, model_path):
    from twinsearch.server.app import start_server

    running = start_server(server_settings(tmp_path_factory.mktemp("rdata"), model_path, encoders="ray",
                                           encoder_replicas=2))
    yield running
    running.stop(grace=1.0)


def test_ray_encoding_answers_as_local_encoding(server, ray_server):
    images = [png(glyph(k, i)) for k in range(5) for i in range(4)]
    labels = [f"c{k}" for k in range(5) for _ in range(4)]
    probes = [png(glyph(k, 7)) for k in range(5)]
    answers = []
    for running in (server, ray_server):
        with Client(running.address, timeout=60) as client:
            client.create_gallery("g", exist_ok=True)
            client.enroll("g", labels, images, ids=[f"{i}" for i in range(len(images))])
            answers.append((
                client.embed(images),
                [(v.same, v.distance, v.probability) for v in client.verify([images[0], images[2]],
                                                                           [images[1], probes[3]])],
                [(a.label, [(c.label, c.distance) for c in a.candidates]) for a in client.identify("g", probes, k=3)],
            ))
    (local_vectors, local_verify, local_identify), (ray_vectors, ray_verify, ray_identify) = answers
    # The same model on the same kind of CPU with the same thread count: the very same bits.
    np.testing.assert_array_equal(ray_vectors, local_vectors)
    assert ray_verify == local_verify
    assert ray_identify == local_identify


def test_a_dead_replica_is_replaced_by_another(ray_server):
    import ray

    pool = ray_server.engine._remote_encoder
    images = [png(glyph(3, i)) for i in range(6)]
    with Client(ray_server.address, timeout=60) as client:
        before = client.embed(images)
        # Gone for good (a restart would only make its calls wait): every batch whose turn falls on it
        # must be answered by the other replica.
        ray.kill(pool._actors[0], no_restart=True)
    # Through the engine, not the client: the client would retry an UNAVAILABLE answer by itself.
    for _ in range(4):  # the turn comes round to the dead replica twice
        np.testing.assert_array_equal(ray_server.engine.embed(images), before)


def test_unreachable_cluster_is_one_line_at_start(tmp_path, model_path):
    started = time.monotonic()
    done = subprocess.run(
        # The shipped model (1 MB): replicas on the server's own node read its file, so no argument that large
        # goes through the object store (Ray would warn that a restarted replica might not find it there).
        [PYTHON, "-m", "twinsearch.client.cli", "serve", "--data-dir", str(tmp_path / "d"), "--model", "omniglot",
         "--address", "127.0.0.1:0", "--encoders", "ray", "--ray", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"PYTHONPATH": ":".join(str(ROOT / p) for p in ("proto", "encoder", "server", "client")),
             "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 60


def test_a_replica_loads_the_model_from_its_bytes_or_its_path(model_path):
    from twinsearch.encoder.errors import ModelFileError
    from twinsearch.encoder.replica import EncoderReplica

    from_bytes = EncoderReplica(model_path.read_bytes(), _fingerprint(model_path))
    from_path = EncoderReplica(str(model_path), _fingerprint(model_path))
    images = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(from_bytes.embed_arrays(images), from_path.embed_arrays(images))
    with pytest.raises(ModelFileError, match="expected"):
        EncoderReplica(str(model_path), "0" * 16)


def _fingerprint(path) -> str:
    from twinsearch.encoder.card import read_card

    return read_card(path)["fingerprint"]


def test_sigterm_stops_a_server_with_a_local_ray_gracefully(tmp_path):
    from .test_local_ray import ray_sessions

    before = ray_sessions()
    env = {"PYTHONPATH": ":".join(str(ROOT / p) for p in ("proto", "encoder", "server", "client")),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    serve = subprocess.Popen(
        # The shipped model (1 MB): replicas on the server's own node read its file, so no argument that large
        # goes through the object store (Ray would warn that a restarted replica might not find it there).
        [PYTHON, "-m", "twinsearch.client.cli", "serve", "--data-dir", str(tmp_path / "d"), "--model", "omniglot",
         "--address", "127.0.0.1:0", "--encoders", "ray", "--encoder-replicas", "1", "--ray-object-store-mb", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        assert serve.stdout.readline().startswith("twinsearch serving on"), serve.stderr.read()
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=120)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert serve.returncode == 0, err
    assert out.rstrip().endswith("twinsearch stopped")
    assert "SIGTERM received" not in err and "Traceback" not in err and "Token authentication" not in err
    assert "constructor arguments in the object store" not in err
    assert ray_sessions() <= before, "the server left Ray processes behind"


def test_no_replica_left_is_unavailable_never_a_wrong_answer(ray_server):
    import ray

    from twinsearch.client import Unavailable

    pool = ray_server.engine._remote_encoder
    for actor in pool._actors:
        ray.kill(actor, no_restart=True)
    with Client(ray_server.address, timeout=5) as client, pytest.raises(Unavailable):
        client.embed([png(glyph(1, 1))])


def test_a_replica_that_does_not_answer_in_time_is_passed_over(ray_cluster, model_path):
    import os

    import ray

    from twinsearch.server.cluster.encoders import RayEncoderPool
    from twinsearch.server.cluster.pipeline import ModelFile
    from twinsearch.server.cluster.runtime import RaySettings

    images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    pool = RayEncoderPool(RaySettings(), model_path, ModelFile.load(model_path).fingerprint, replicas=2, threads=1,
                          call_timeout_s=2.0)
    try:
        expected = pool.embed_arrays(images)
        stuck = ray.get(pool._actors[0].pid.remote())
        # A replica that takes no work (as one that Ray is restarting: its calls wait in Ray's queue).
        os.kill(stuck, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for _ in range(2):  # one of the two turns falls on the stopped replica
                np.testing.assert_array_equal(pool.embed_arrays(images), expected)
            assert time.monotonic() - started < 30
        finally:
            os.kill(stuck, signal.SIGCONT)
        for _ in range(2):  # back in turn once it answers again
            np.testing.assert_array_equal(pool.embed_arrays(images), expected)
    finally:
        pool.close()
