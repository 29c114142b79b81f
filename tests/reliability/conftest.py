"""Shared pieces of the reliability suite: a tiny model file, a server in its own process, seeded data.

The suite's sizes come from environment variables whose defaults keep the whole folder within a few
minutes on 2 cores (CI runs it); raise them for a longer soak:

    TWINSEARCH_CRASH_ROUNDS     SIGKILL rounds of the crash-safety test          (default 20)
    TWINSEARCH_CRASH_DELETE_ROUNDS  SIGKILL rounds with deletions mixed in       (default 8)
    TWINSEARCH_BAD_INPUTS       malformed inputs of the bad-input corpus, >= 1000 (default 1100)
    TWINSEARCH_LOAD_SECONDS     duration of the mixed load test, seconds          (default 60)
    TWINSEARCH_LOAD_CLIENTS     concurrent clients of the load test               (default 64)

The server runs as `python -m twinsearch.client.cli serve` in a subprocess, as in production, so
that it can be killed with SIGKILL and its resident memory read from /proc.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twinsearch.client.server_process import ServerProcess

DIM = 16
SIDE = 28


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def build_model(path: Path, seed: int = 0) -> Path:
    """A real, untrained, seeded Conv-4 (28 x 28 grayscale, 16-d) with a calibration fitted on synthetic
    distances, saved as a model file. The suite checks plumbing and durability, not accuracy."""
    import torch

    from twinsearch.encoder.calibration import Calibration
    from twinsearch.encoder.heads import build_net
    from twinsearch.encoder.model import EncoderModel
    from twinsearch.encoder.preprocess import Preprocess

    torch.manual_seed(seed)
    architecture = {"backbone": "conv4", "backbone_args": {"widths": [8, 8], "input_size": SIDE},
                    "dim": DIM, "head_args": {}}
    net = build_net(architecture).eval()
    rng = np.random.default_rng(seed)
    calibration = Calibration.fit(rng.normal(0.5, 0.15, 2000).clip(0, 2), rng.normal(1.2, 0.15, 2000).clip(0, 2))
    model = EncoderModel.create(net, architecture, Preprocess(width=SIDE, height=SIDE, channels=1),
                                f"reliability-{seed}", calibration=calibration.to_dict())
    model.save(path)
    return path


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "tiny.tsm")


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def glyph_png(seed: int, size: int = SIDE) -> bytes:
    """A deterministic grayscale PNG: a few dark strokes on white."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 255, dtype=np.uint8)
    for _ in range(3):
        r0, c0, r1, c1 = rng.integers(2, size - 2, size=4)
        img[np.linspace(r0, r1, 30).astype(int), np.linspace(c0, c1, 30).astype(int)] = 0
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def assert_same_candidates(got, expected) -> None:
    """Identify answers agree: the same candidate labels in the same order, distances within 1e-5."""
    for g, e in zip(got, expected, strict=True):
        assert [x.label for x in g.candidates] == [x.label for x in e.candidates]
        np.testing.assert_allclose([x.distance for x in g.candidates], [x.distance for x in e.candidates],
                                   rtol=0, atol=1e-5)


def start_server(data_dir: Path, model: Path, *flags: str) -> ServerProcess:
    """`twinsearch serve` over `data_dir`, serving, with one torch thread (the suite runs on 2 cores).
    A restart over the same folder appends to the same log, `<data_dir>-serve.log`."""
    return ServerProcess.start(data_dir, model, flags=("--torch-threads", "1", *flags), timeout_s=120.0)


@pytest.fixture
def serve(tmp_path, model_file):
    """serve(name="data", *flags) -> a started ServerProcess over tmp_path/name; all stopped at the end."""
    started: list[ServerProcess] = []

    def start(name: str = "data", *extra: str) -> ServerProcess:
        p = start_server(tmp_path / name, model_file, *extra)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.alive():
            p.stop()
