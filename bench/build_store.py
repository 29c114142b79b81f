"""Build a gallery store of seeded clustered vectors in a fresh process (the server opens it afterwards).

    python -m bench.build_store --data DIR --n 1000000 --classes 100000 --dim 128 --fingerprint FP \\
        --kind exact|ivf [--nlist 1024 --nprobe 16]

Runs in its own process so that the benchmark's own memory and the server's start-up are not
disturbed by it. Enrolls through `GalleryStore.enroll` in batches of 10,000 with client ids "<row>",
then closes the store, which writes the index snapshot a server loads at start-up. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import Clustered

BATCH = 10_000
GALLERY = "bench"


def build(data: Path, n: int, classes: int, dim: int, fingerprint: str, kind: str, nlist: int, nprobe: int) -> dict:
    from twinsearch.client.types import IndexKind, IndexSpec
    from twinsearch.server.store import GalleryStore, StoreSettings

    gen = Clustered(n, classes, dim)
    store = GalleryStore.open(data, StoreSettings(synchronous="NORMAL"))
    spec = IndexSpec(kind=IndexKind(kind), nlist=nlist, nprobe=nprobe) if kind == "ivf" else IndexSpec()
    store.create_gallery(GALLERY, fingerprint=fingerprint, dim=dim, index=spec)
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        x, cls = gen.chunk(start, stop)
        store.enroll(GALLERY, [f"class-{c}" for c in cls.tolist()], x,
                     client_ids=[str(i) for i in range(start, stop)], fingerprint=fingerprint)
    enroll_s = time.perf_counter() - t0
    info = store.get_gallery(GALLERY)
    t1 = time.perf_counter()
    store.close()
    return {"kind": kind, "n": n, "enroll_s": round(enroll_s, 1), "snapshot_s": round(time.perf_counter() - t1, 1),
            "items": info.item_count, "classes": info.class_count, "index": str(info.index)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--classes", type=int, required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--fingerprint", required=True)
    ap.add_argument("--kind", choices=("exact", "ivf"), default="exact")
    ap.add_argument("--nlist", type=int, default=0)
    ap.add_argument("--nprobe", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(build(a.data, a.n, a.classes, a.dim, a.fingerprint, a.kind, a.nlist, a.nprobe)), flush=True)


if __name__ == "__main__":
    main()
