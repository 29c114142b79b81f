"""Shared fixtures of the server tests: a tiny seeded model file, synthetic images, a running server.

The model is a real `EncoderModel` (two conv blocks, 16-dim embeddings, untrained, seeded) with a
calibration fitted on seeded synthetic distances, saved as a real model file, so the server loads it
as it would load any other.
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from twinsearch.encoder.backbones import Conv4
from twinsearch.encoder.calibration import Calibration
from twinsearch.encoder.heads import EmbeddingHead, EmbeddingNet
from twinsearch.encoder.model import EncoderModel
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.server.app import ServerSettings, start_server
from twinsearch.server.settings import EngineSettings
from twinsearch.v1 import twinsearch_pb2_grpc

torch.set_num_threads(1)

DIM = 16
SIDE = 28
TIMEOUT = 30.0  # every test call passes a deadline


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit length, as float32 (vectors to enroll and probe with)."""
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def vector_engine(tmp_path, model_path):
    """An engine of its own, no batching wait, for tests that enroll and query vectors."""
    from twinsearch.server.engine import Engine

    with Engine.open(tmp_path, model_path, EngineSettings(torch_threads=1, batch_wait_ms=0)) as e:
        yield e


def build_model(seed: int = 0, calibrated: bool = True, dim: int = DIM) -> EncoderModel:
    torch.manual_seed(seed)
    architecture = {"backbone": "conv4", "backbone_args": {"in_channels": 1, "widths": [8, 8], "input_size": SIDE},
                    "dim": dim, "head_args": {}}
    backbone = Conv4(in_channels=1, widths=(8, 8), input_size=SIDE)
    net = EmbeddingNet(backbone, EmbeddingHead(backbone.out_features, dim))
    calibration = None
    if calibrated:
        rng = np.random.default_rng(seed)
        calibration = Calibration.fit(rng.normal(0.4, 0.1, 2000).clip(0, 2),
                                      rng.normal(1.1, 0.15, 2000).clip(0, 2)).to_dict()
    preprocess = Preprocess(width=SIDE, height=SIDE, channels=1, invert=True)
    return EncoderModel.create(net, architecture, preprocess, name=f"tiny-{seed}", calibration=calibration)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.tsm"
    build_model(0).save(path)
    return path


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory) -> Path:
    """A second model (other weights, so another fingerprint), without calibration."""
    path = tmp_path_factory.mktemp("model2") / "other.tsm"
    build_model(1, calibrated=False).save(path)
    return path


def glyph(cls: int, variant: int = 0, size: int = 32) -> np.ndarray:
    """A synthetic character: class-specific dark strokes on white, shifted a little per variant."""
    rng = np.random.default_rng(1000 * cls + variant)
    crng = np.random.default_rng(cls)
    img = np.full((size, size), 255, dtype=np.uint8)
    shift = rng.integers(-1, 2, size=2) if variant else np.zeros(2, dtype=int)
    for _ in range(3):
        r0, c0, r1, c1 = crng.integers(4, size - 4, size=4)
        rr = np.clip(np.linspace(r0, r1, 40).astype(int) + shift[0], 0, size - 1)
        cc = np.clip(np.linspace(c0, c1, 40).astype(int) + shift[1], 0, size - 1)
        img[rr, cc] = 0
        img[np.clip(rr + 1, 0, size - 1), cc] = 0
    return img


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def serve_and_stop(argv: list[str], lines: int) -> tuple[list[str], str, str, int]:
    """Run `twinsearch serve ARGV...` in a process of its own, read its first `lines` lines of output, stop it
    with SIGTERM: (those lines, the rest of stdout, stderr, exit status). A line that never comes fails the
    test within two minutes rather than hanging it."""
    cmd = [sys.executable, "-m", "twinsearch.client.cli", *argv]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    try:
        first = [process.stdout.readline() for _ in range(lines)]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    return first, out, err, process.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_for(data_dir: Path, model_path: Path, **kw) -> ServerSettings:
    engine = kw.pop("engine", EngineSettings(max_batch=64, max_k=50, max_pixels=1_000_000, torch_threads=1))
    return ServerSettings(data_dir=data_dir, model_path=model_path, address="127.0.0.1:0", workers=16,
                          grace_s=5.0, engine=engine, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_path):
    """One running server per test module (plain TCP, no token), on a free port."""
    running = start_server(settings_for(tmp_path_factory.mktemp("data"), model_path, metrics_port=0, max_message_mb=2))
    yield running
    running.stop(grace=1.0)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT)
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return twinsearch_pb2_grpc.TwinSearchStub(channel)
