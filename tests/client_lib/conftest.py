"""Fixtures for the client library tests: a tiny model file, a real server on a free localhost port,
and a LocalClient over its own data folder.

The model is a small random-initialised Conv-4 (28 x 28 grayscale, 16-d) with a calibration fitted
on synthetic distances: what these tests check is the plumbing (arguments, conversions, errors,
streams, congruence), not accuracy, and a real model would take minutes to train. Tests that need
meaningful neighbours enroll vectors directly, which skip the encoder.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image

DIM = 16


def _write_tiny_model(path) -> None:
    import torch

    from twinsearch.encoder.calibration import Calibration
    from twinsearch.encoder.heads import build_net
    from twinsearch.encoder.model import EncoderModel
    from twinsearch.encoder.preprocess import Preprocess

    torch.manual_seed(0)
    architecture = {"backbone": "conv4", "backbone_args": {"widths": [8, 8, 8, 8], "input_size": 28},
                    "dim": DIM, "head_args": {}}
    net = build_net(architecture).eval()
    rng = np.random.default_rng(0)
    calibration = Calibration.fit(rng.normal(0.6, 0.15, 400).clip(0, 2), rng.normal(1.3, 0.15, 4000).clip(0, 2))
    model = EncoderModel.create(net, architecture, Preprocess(width=28, height=28, channels=1), "tiny-test",
                                calibration=calibration.to_dict())
    model.save(path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.tsm"
    _write_tiny_model(path)
    return path


def make_png(seed: int, size: int = 28) -> bytes:
    """A deterministic random grayscale PNG."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def png():
    """png(seed, size=28) -> a deterministic random grayscale PNG (bytes)."""
    return make_png


@pytest.fixture(scope="session")
def unit_vectors():
    """unit_vectors(n, seed, dim=16) -> (n, dim) float32 L2-normalised rows."""
    return make_unit_vectors


@pytest.fixture(scope="session")
def dim():
    return DIM


@contextlib.contextmanager
def running_server(data_dir, model, token: str | None = None, grace: float = 5.0):
    """A real gRPC server on a free localhost port over `data_dir`, stopped when the block ends."""
    from twinsearch.server.app import ServerSettings, start_server

    running = start_server(ServerSettings(data_dir=data_dir, model_path=model, address="127.0.0.1:0", token=token))
    try:
        yield running
    finally:
        running.stop(grace=grace)


@pytest.fixture
def server(tmp_path, tiny_model):
    """A real gRPC server on a free localhost port over a fresh data folder; yields the running server."""
    with running_server(tmp_path / "server-data", tiny_model) as running:
        yield running


@pytest.fixture
def client(server):
    from twinsearch.client import Client

    with Client(f"127.0.0.1:{server.port}", timeout=20.0) as c:
        yield c


@pytest.fixture
def local_client(tmp_path, tiny_model):
    from twinsearch.client import LocalClient

    with LocalClient(tmp_path / "local-data", model=tiny_model) as c:
        yield c


@pytest.fixture(params=["remote", "local"])
def any_client(request):
    """The test server's `client`, then a `LocalClient`: a test taking it runs once with each."""
    return request.getfixturevalue("client" if request.param == "remote" else "local_client")
