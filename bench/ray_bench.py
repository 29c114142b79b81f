"""Ray: bulk embedding with `twinsearch embed` and the server's encoder replicas (`--encoders ray`).

- `bulk_ray_images_per_s`: what `twinsearch embed` reports (images embedded over its own wall clock:
  source listing, the start of a local Ray instance, the pipeline and the Parquet files, all
  included) over Fashion-MNIST's images as PNG files, with its defaults (one encoder replica, torch
  threads = the cores, decoding in the replica on a machine without GPUs).
  `bulk_ray_inprocess_images_per_s`: `EncoderModel.embed` in this process on a sample of the same files
  at the encoder section's best batch size (read, decode, preprocess, forward), timed before and after
  the Ray run, the mean of the two. `bulk_ray_ratio` = Ray / in-process.
- `serve_ray_ratio`: images/s of Embed from the encoder section's 16 concurrent clients (16 PNG images a
  call) against `twinsearch serve --encoders ray --encoder-replicas 2` (a local Ray instance) over the
  same load against a server with local encoding, both started here, one after the other.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.bulk import inprocess_around, write_tree
from bench.common import BenchError, omniglot_pngs, start_server
from bench.encoder import server_embed
from twinsearch.client.server_process import ServerProcess, ServerStartError

log = logging.getLogger("bench")

REPLICAS = 2


def bulk(model, model_file: Path, work: Path, count: int, inprocess_count: int, batch: int) -> dict:
    root = work / "fashion-mnist"
    log.info("ray: writing %d Fashion-MNIST PNG files", count)
    paths = write_tree(root, count)
    rng = np.random.default_rng(0)
    sample = [paths[i] for i in sorted(rng.choice(len(paths), size=min(inprocess_count, len(paths)), replace=False))]
    out = work / "ray-vectors"
    shutil.rmtree(out, ignore_errors=True)  # a re-run would resume, embedding nothing
    cmd = [sys.executable, "-m", "twinsearch.client.cli", "embed", str(root), "--out", str(out), "--model",
           str(model_file), "--no-progress", "--json"]

    def embed() -> tuple[subprocess.CompletedProcess, float, float]:
        log.info("ray: twinsearch embed over %d files", len(paths))
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        return subprocess.run(cmd, capture_output=True, text=True), time.perf_counter() - t0, load0

    log.info("ray: in-process encoder over %d of them, before and after", len(sample))
    (done, wall, load0), local = inprocess_around(model, sample, batch, embed)
    if done.returncode:
        raise BenchError(f"twinsearch embed failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    report.pop("failures", None)
    if report["embedded"] != len(paths):
        raise BenchError(f"twinsearch embed embedded {report['embedded']} of {len(paths)}")
    return {
        "bulk_ray": {**report, "command": "twinsearch embed DIR --out OUT --model M", "wall_s_with_cli_startup":
                     round(wall, 1), "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)]},
        "bulk_ray_inprocess": local,
        "bulk_ray_images_per_s": report["images_per_s"],
        "bulk_ray_inprocess_images_per_s": local["images_per_s"],
        "bulk_ray_ratio": round(report["images_per_s"] / local["images_per_s"], 3),
    }


def serve(model_file: Path, work: Path, count: int) -> dict:
    images = omniglot_pngs(count)
    figures = {}
    for name, flags in (("local", []), ("ray", ["--encoders", "ray", "--encoder-replicas", str(REPLICAS)])):
        data = work / f"serve-{name}"
        shutil.rmtree(data, ignore_errors=True)
        log.info("ray: Embed load against a server with %s encoding", name)
        try:
            srv = ServerProcess.start(data, model_file, flags=flags, timeout_s=300.0) if flags else \
                start_server(data, model_file)
        except ServerStartError as exc:
            raise BenchError(f"the server did not start: {exc}") from None
        with srv:
            figures[name] = {**server_embed(srv.address, images), "startup_s": round(srv.startup_s, 2),
                             "load_average": round(os.getloadavg()[0], 2)}
    return {
        "serve_ray": figures["ray"], "serve_local": figures["local"], "serve_ray_replicas": REPLICAS,
        "serve_ray_images_per_s": figures["ray"]["items_per_s"],
        "serve_local_images_per_s": figures["local"]["items_per_s"],
        "serve_ray_ratio": round(figures["ray"]["items_per_s"] / figures["local"]["items_per_s"], 3),
    }


def run(model, model_file: Path, work: Path, size: dict, batch: int) -> dict:
    out = bulk(model, model_file, work, size["bulk_images"], size["bulk_inprocess_images"], batch)
    out.update(serve(model_file, work, size["encoder_images"]))
    return out
