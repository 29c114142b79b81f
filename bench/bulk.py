"""Bulk indexing: Fashion-MNIST's images enrolled with `twinsearch index` against the in-process encoder.

The images are written once as PNG files in a folder tree (one folder per class, as `twinsearch index`
expects). `bulk_index_images_per_s` is what the command reports (images sent over its own wall
clock, folder walk included) with its default batch size and requests in flight; the in-process side
reads a sample of the same files and embeds them with `EncoderModel.embed` at the best batch size found
by the encoder section, before and after the command runs (`inprocess_around`: the mean of the two).
`bulk_index_ratio` = server / in-process.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from bench.common import BenchError, fashion_mnist

log = logging.getLogger("bench")
T = TypeVar("T")


def write_tree(root: Path, count: int) -> list[Path]:
    """The first `count` Fashion-MNIST images (train, then test) as root/<class>/<n>.png; the paths."""
    x, y = fashion_mnist()
    paths = []
    for i in range(min(count, len(x))):
        folder = root / f"class{y[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        if not path.exists():
            buf = io.BytesIO()
            Image.fromarray(x[i]).save(buf, format="PNG")
            path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def inprocess(model, paths: list[Path], batch: int) -> dict:
    model.embed([p.read_bytes() for p in paths[:batch]])  # warm up
    t0 = time.perf_counter()
    for s in range(0, len(paths), batch):
        model.embed([p.read_bytes() for p in paths[s:s + batch]])
    seconds = time.perf_counter() - t0
    return {"images": len(paths), "batch": batch, "seconds": round(seconds, 2),
            "images_per_s": round(len(paths) / seconds, 1)}


def inprocess_around(model, paths: list[Path], batch: int, measured: Callable[[], T]) -> tuple[T, dict]:
    """Run `measured` between two timings of `inprocess` on `paths`; (its result, the reference), whose
    images_per_s is the mean of the two. A few seconds of in-process work alone swing by a third
    between runs on a shared machine (and even within one run); the two timings bracket the run."""
    before = inprocess(model, paths, batch)
    result = measured()
    after = inprocess(model, paths, batch)
    return result, {"images": len(paths), "batch": batch, "before": before, "after": after,
                    "images_per_s": round((before["images_per_s"] + after["images_per_s"]) / 2, 1)}


def run(address: str, model, work: Path, count: int, inprocess_count: int, batch: int) -> dict:
    root = work / "fashion-mnist"
    log.info("bulk: writing %d Fashion-MNIST PNG files", count)
    paths = write_tree(root, count)
    rng = np.random.default_rng(0)
    sample = [paths[i] for i in sorted(rng.choice(len(paths), size=min(inprocess_count, len(paths)), replace=False))]
    cmd = [sys.executable, "-m", "twinsearch.client.cli", "index", str(root), "--gallery", "fashion-mnist",
           "--create", "--no-progress", "--json", "--address", address, "--timeout", "600"]

    def index() -> tuple[subprocess.CompletedProcess, float]:
        log.info("bulk: twinsearch index over %d files", len(paths))
        t0 = time.perf_counter()
        return subprocess.run(cmd, capture_output=True, text=True), time.perf_counter() - t0

    log.info("bulk: in-process encoder over %d of them, before and after", len(sample))
    (done, wall), local = inprocess_around(model, sample, batch, index)
    if done.returncode:
        raise BenchError(f"twinsearch index failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    if report["stored"] != len(paths) or report["failed"]:
        raise BenchError(f"twinsearch index stored {report['stored']} of {len(paths)}, failed {report['failed']}")
    report.pop("failures", None)
    return {
        "bulk_index": {**report, "command": " ".join(cmd[2:6]) + " ...", "wall_s_with_cli_startup": round(wall, 1)},
        "bulk_index_inprocess": local,
        "bulk_index_images_per_s": report["images_per_s"],
        "bulk_index_inprocess_images_per_s": local["images_per_s"],
        "bulk_index_ratio": round(report["images_per_s"] / local["images_per_s"], 3),
    }
