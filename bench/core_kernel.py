"""Exhaustive-search kernel at 1M x 128: faiss's own settings against the store's (IndexParams).

    .venv/bin/python bench/core_kernel.py

Builds an IndexIDMap(IndexFlatL2) of 1M random unit vectors (no SQLite), then times one batch of 256
queries at depth 32 (what a batched exact identify asks of FAISS) under each setting, interleaved,
best of 2. Prints one line.
"""

from __future__ import annotations

import time

import faiss
import numpy as np

from twinsearch.server.index import IndexParams, configure_faiss

FAISS_DEFAULTS = IndexParams(blas_threshold=128000, blas_query_bs=4096, blas_database_bs=1024)  # faiss 1.15


def main() -> None:
    rng = np.random.default_rng(0)
    index = faiss.IndexIDMap(faiss.IndexFlatL2(128))
    for i in range(10):
        x = rng.normal(size=(100_000, 128)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        index.add_with_ids(x, np.arange(i * 100_000, (i + 1) * 100_000))
    q = np.ascontiguousarray(x[:256] + 0.01, dtype=np.float32)
    best: dict[str, float] = {}
    for _ in range(2):
        for name, params in (("faiss defaults", FAISS_DEFAULTS), ("IndexParams()", IndexParams())):
            configure_faiss(params)
            t = time.perf_counter()
            index.search(q, 32)
            best[name] = max(best.get(name, 0.0), len(q) / (time.perf_counter() - t))
    print({k: round(v, 1) for k, v in best.items()}, "queries/s: 1M x 128 flat, batch 256, depth 32")


if __name__ == "__main__":
    main()
