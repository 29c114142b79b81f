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
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class ServeProcess:
    """`twinsearch serve` over `data_dir` on a free port, in a subprocess. `address` once it serves."""

    def __init__(self, data_dir: Path, model: Path, *extra: str, timeout_s: float = 120.0):
        cmd = [sys.executable, "-m", "twinsearch.client.cli", "serve", "--data-dir", str(data_dir),
               "--model", str(model), "--address", "127.0.0.1:0", "--torch-threads", "1", *extra]
        self.log = data_dir.parent / f"{data_dir.name}-serve.log"
        self._log = open(self.log, "a")  # noqa: SIM115 - closed in stop()/kill()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        self.address = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"serving on (\S+)", line)
            if m:
                self.address = m.group(1)
                break
        if self.address is None:
            self.kill()
            raise RuntimeError(f"server did not start:\n{self.log.read_text()[-3000:]}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (no snapshot, no SQLite close)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._log.close()

    def stop(self) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def serve(tmp_path, model_file):
    """serve(name="data", *flags) -> a started ServeProcess over tmp_path/name; all stopped at the end."""
    started: list[ServeProcess] = []

    def start(name: str = "data", *extra: str) -> ServeProcess:
        p = ServeProcess(tmp_path / name, model_file, *extra)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.alive():
            p.stop()
