"""Fixtures of the Ray tests: a tiny model, synthetic image trees, and one real two-node Ray cluster.

The cluster (`ray.cluster_utils.Cluster`: a head and a second node, each a raylet with 2 logical CPUs
and a 100 MiB object store, no dashboard) starts once per session and this process joins it; the
commands run in-process then use that connection, and the pipeline's actors and tasks spread over both
nodes. Its worker processes get this checkout's packages through PYTHONPATH. Everything is shut down
at the end of the session, also when a test fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
NODE_STORE = 100 * 1024 * 1024


def build_model(seed: int = 0):
    import torch

    from twinsearch.encoder.calibration import Calibration
    from twinsearch.encoder.heads import build_net
    from twinsearch.encoder.model import EncoderModel
    from twinsearch.encoder.preprocess import Preprocess

    torch.manual_seed(seed)
    architecture = {"backbone": "conv4", "backbone_args": {"widths": [8, 8], "input_size": 28}, "dim": 16,
                    "head_args": {}}
    net = build_net(architecture).eval()
    rng = np.random.default_rng(seed)
    calibration = Calibration.fit(rng.normal(0.4, 0.1, 400).clip(0, 2), rng.normal(1.1, 0.15, 4000).clip(0, 2))
    # A normalisation that is not the identity, so that a pipeline skipping a preprocessing step shows.
    preprocess = Preprocess(width=28, height=28, channels=1, invert=True, mean=(0.2,), std=(0.3,))
    return EncoderModel.create(net, architecture, preprocess,
                               f"tiny-ray-{seed}", calibration=calibration.to_dict())


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.tsm"
    build_model(0).save(path)
    return path


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model2") / "other.tsm"
    build_model(1).save(path)
    return path


def glyph(cls: int, variant: int) -> np.ndarray:
    """Class-specific dark strokes on white, moved a little per variant (28 x 28 uint8)."""
    rng = np.random.default_rng(1000 * cls + variant)
    crng = np.random.default_rng(cls)
    img = np.full((28, 28), 255, dtype=np.uint8)
    shift = rng.integers(-1, 2, size=2)
    for _ in range(3):
        r0, c0, r1, c1 = crng.integers(3, 25, size=4)
        rr = np.clip(np.linspace(r0, r1, 30).astype(int) + shift[0], 0, 27)
        cc = np.clip(np.linspace(c0, c1, 30).astype(int) + shift[1], 0, 27)
        img[rr, cc] = 0
    return img


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, classes: int, per_class: int, bad: bool = True) -> Path:
    """root/c<k>/<i>.png, plus (with `bad`) a corrupt image and a text file with an image's name."""
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / f"c{k}" / f"{i}.png").write_bytes(png(glyph(k, i)))
    if bad:
        (root / "c0" / "corrupt.png").write_bytes(png(glyph(0, 99))[:40])
        (root / "c1" / "notes.png").write_bytes(b"these are not pixels")
    return root


def descendants() -> set[int]:
    """Process ids of this process's children, their children, and so on (from /proc)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])  # "pid (name) state ppid"
            except (OSError, IndexError, ValueError):
                continue
    me, found = os.getpid(), set()
    for pid in parent:
        up = parent[pid]
        while up > 1 and up != me and up in parent:
            up = parent[up]
        if up == me:
            found.add(pid)
    return found


def starting(start, attempts: int = 2):
    """`start()` (a Ray node starting), once more when its raylet missed Ray's fixed 30 s start-up wait,
    as it has on a loaded 2-core machine; the processes of the failed start are killed first."""
    for attempt in range(1, attempts + 1):
        before = descendants()
        try:
            return start()
        except Exception as exc:
            if attempt == attempts or "timed out during startup" not in str(exc):
                raise
            for pid in descendants() - before:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on this machine, joined by this process; shut down at the end."""
    import ray
    from ray.cluster_utils import Cluster

    paths = [str(ROOT / p) for p in ("proto", "encoder", "server", "client")]
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([previous] if previous else []))
    node = {"num_cpus": 2, "object_store_memory": NODE_STORE, "include_dashboard": False}
    cluster = starting(lambda: Cluster(initialize_head=True, head_node_args=node))
    try:
        starting(lambda: cluster.add_node(num_cpus=2, object_store_memory=NODE_STORE))
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def cli(*argv: str) -> int:
    """`twinsearch ARGV...` in this process (so that it uses the session's Ray connection)."""
    from twinsearch.client.cli import main

    return main(list(argv))


PYTHON = sys.executable


def server_settings(data_dir: Path, model_path: Path, **engine):
    from twinsearch.server.settings import EngineSettings, ServerSettings

    return ServerSettings(data_dir=data_dir, model_path=model_path, address="127.0.0.1:0", workers=8, grace_s=2.0,
                          engine=EngineSettings(torch_threads=1, **engine))


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_path):
    """A running server with local encoding."""
    from twinsearch.server.app import start_server

    running = start_server(server_settings(tmp_path_factory.mktemp("data"), model_path))
    yield running
    running.stop(grace=1.0)
