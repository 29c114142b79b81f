"""Figures of the load model in docs/scaling.md: search cost per query and memory per vector by index kind.

    python -m bench.scaling                 # 100,000 and 1,000,000 vectors (about 5 minutes on 2 cores)
    python -m bench.scaling --sizes 100000  # one size

For each size: seeded 128-d unit vectors around n/10 class centres (as the gallery benchmark), and
FAISS indexes as the gallery builds them (`twinsearch.server.index`'s kinds: flat, IVF with sqrt-ish
cells and 32 probed, HNSW M=32 at 100,000 only: its build takes most of an hour at 1M on 2 cores).
Per kind: milliseconds of CPU wall time per query when 256 queries are searched together at k=32 on
all cores (the server's gathered searches), build time, and bytes per vector of the serialised index
(what the process holds for it; SQLite keeps its own copy on disk). Writes
bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 128
QUERIES = 1024
BATCH = 256
K = 32


def vectors(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 10), DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[np.arange(n) % len(centres)] + rng.normal(0, 0.03, size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = centres[rng.integers(0, len(centres), QUERIES)] + rng.normal(0, 0.03, size=(QUERIES, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.ascontiguousarray(x), np.ascontiguousarray(q)


def build(kind: str, x: np.ndarray):
    n = len(x)
    if kind == "exact":
        index = faiss.IndexFlatL2(DIM)
    elif kind == "ivf":
        nlist = 1024 if n >= 500_000 else 256
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(DIM), DIM, nlist)
        index.train(x[: min(n, 100 * nlist)])
        index.nprobe = 32
        index.make_direct_map()  # as the gallery keeps it, to read stored vectors back
    else:
        index = faiss.IndexHNSWFlat(DIM, 32)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = 64
    index.add(x)
    return index


def measure(kind: str, x: np.ndarray, q: np.ndarray, exact_top: np.ndarray | None) -> dict:
    t0 = time.perf_counter()
    index = build(kind, x)
    build_s = time.perf_counter() - t0
    index.search(q[:BATCH], K)  # warm-up
    t0 = time.perf_counter()
    found = [index.search(q[s:s + BATCH], K)[1] for s in range(0, len(q), BATCH)]
    seconds = time.perf_counter() - t0
    top = np.concatenate(found)
    recall = None
    if exact_top is not None:
        recall = float(np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(top, exact_top, strict=True)]))
    size = faiss.serialize_index(index).nbytes
    return {"kind": kind, "n": len(x), "build_s": round(build_s, 2), "ms_per_query": round(1000 * seconds / len(q), 3),
            "queries_per_s": round(len(q) / seconds, 1), "bytes_per_vector": round(size / len(x), 1),
            "recall_at_10": None if recall is None else round(recall, 4)}, top


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = ap.parse_args()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    rows = []
    load0 = os.getloadavg()[0]
    for n in args.sizes:
        x, q = vectors(n)
        exact, top = measure("exact", x, q, None)
        rows.append(exact)
        print(json.dumps(exact), flush=True)
        for kind in ("ivf", "hnsw") if n <= 100_000 else ("ivf",):
            row, _ = measure(kind, x, q, top)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": "python -m bench.scaling",
           "cores": os.cpu_count(), "dim": DIM, "batch": BATCH, "k": K,
           "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)], "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {RESULTS / 'scaling.json'}")


if __name__ == "__main__":
    main()
