"""Where the time of `twinsearch embed` goes on a local Ray instance (docs/scaling.md, section 3).

    python -m bench.ray_profile                                  # 10,000 images, batches 64, 256, 1,024
    python -m bench.ray_profile --images 2000 --batches 256      # shorter

On seeded 28 x 28 noise PNGs (written once under --work) and the shipped model, it measures: decoding
and preprocessing per image (`decode_batch`, one process), the forward pass per image in one replica
(`EncoderReplica`, torch threads = the cores) at each batch size, the start and stop of a local Ray
instance alone, and `embed_to_parquet` (what `twinsearch embed` runs) at each batch size, whose seconds
include that start and stop. Prints one JSON document; the load average is recorded beside each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from twinsearch.encoder.replica import EncoderReplica
from twinsearch.server.cluster.pipeline import EmbedSettings, ModelFile, decode_batch, embed_to_parquet
from twinsearch.server.cluster.runtime import RaySettings, ray_session
from twinsearch.server.cluster.sources import list_source
from twinsearch.server.settings import DEFAULT_MAX_PIXELS

SAMPLE = 2048  # images timed in-process


def write_tree(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        path = root / f"c{i % 100}" / f"{i}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(path)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--work", type=Path, default=Path("/tmp/twinsearch-ray-profile"))
    parser.add_argument("--object-store-mb", type=int, default=200)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    cores = os.cpu_count() or 1
    root = args.work / "tree"
    write_tree(root, args.images)
    out: dict = {"images": args.images, "cores": cores, "load_at_start": load()}

    model = ModelFile.load(None)
    records = [r.as_record() for r in list_source(root).rows[:SAMPLE]]
    columns = {k: np.array([r[k] for r in records], dtype=object) for k in records[0]}
    t0 = time.perf_counter()
    images = decode_batch(columns, model.preprocess, DEFAULT_MAX_PIXELS)["image"]
    out["decode_ms_per_image"] = round((time.perf_counter() - t0) / len(records) * 1e3, 3)
    replica = EncoderReplica(model.data, model.fingerprint, threads=cores)
    for b in batches:
        replica.embed_arrays(images[:b])  # warm
        t0 = time.perf_counter()
        for start in range(0, len(images), b):
            replica.embed_arrays(images[start:start + b])
        out[f"forward_ms_per_image_batch_{b}"] = round((time.perf_counter() - t0) / len(images) * 1e3, 3)
    del replica

    ray_settings = RaySettings(None, cores, args.object_store_mb)
    t0 = time.perf_counter()
    with ray_session(ray_settings):
        started = time.perf_counter() - t0
    out["ray_start_s"], out["ray_start_and_stop_s"] = round(started, 2), round(time.perf_counter() - t0, 2)

    for b in batches:
        dest = args.work / f"vectors-{b}"
        shutil.rmtree(dest, ignore_errors=True)
        report = embed_to_parquet(root, dest, settings=EmbedSettings(batch=b), ray_settings=ray_settings)
        out[f"embed_batch_{b}"] = {"embedded": report.embedded, "seconds": round(report.seconds, 1),
                                   "images_per_s": round(report.images_per_s, 1), "load_after": load()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
