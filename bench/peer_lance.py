"""The peer: the same vectors and probes in LanceDB, an embedded vector store a user might pick instead.

    python -m bench.peer_lance --vectors X.npy --probes Q.npy --truth T.npy --out R.json \\
        --threads 32 --budget-s 60 [--index none|ivf_flat --nlist N --nprobes P1,P2,...]

Runs in its own process (its memory and threads stay out of ours). Loads the vectors into a LanceDB
table (in batches of 100,000 rows), optionally builds an IVF_FLAT index (`--nlist` cells), then answers
the probes one per call from `--threads` threads, as our server's clients do, once per number of
cells probed in `--nprobes` (exhaustive search: once), each within about `--budget-s` / configs seconds
(fewer probes when it is slow; the count is reported). Recall@10 is measured against `--truth` (the
exact top 10 row numbers of each probe). Writes {"configs": [...], ...} as JSON to --out.

LanceDB is optional: `pip install lancedb` (the `bench` extra). Without it this exits with code 3 and
says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=Path, required=True)
    ap.add_argument("--probes", type=Path, required=True)
    ap.add_argument("--truth", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--budget-s", type=float, default=60.0)
    ap.add_argument("--index", choices=("none", "ivf_flat"), default="none")
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobes", default="16", help="comma-separated cells probed, one measurement each")
    a = ap.parse_args()
    os.environ.setdefault("LANCE_LOG", "error")
    os.environ.setdefault("RUST_LOG", "error")
    try:
        import lancedb
        import pyarrow as pa
    except ImportError as exc:
        print(f"the peer benchmark needs LanceDB: pip install lancedb ({exc})", file=sys.stderr)
        return 3
    from bench.common import run_concurrent

    x = np.load(a.vectors, mmap_mode="r")
    probes = np.load(a.probes)
    truth = np.load(a.truth)
    n, dim = x.shape
    folder = tempfile.mkdtemp(prefix="twinsearch-peer-")
    db = lancedb.connect(folder)
    t0 = time.perf_counter()
    table = None
    for s in range(0, n, 100_000):
        part = np.ascontiguousarray(x[s:s + 100_000], dtype=np.float32)
        batch = pa.table({"id": pa.array(np.arange(s, s + len(part), dtype=np.int64)),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim)})
        if table is None:
            table = db.create_table("bench", data=batch, mode="overwrite")
        else:
            table.add(batch)
    load_s = time.perf_counter() - t0
    index_s = 0.0
    if a.index == "ivf_flat":
        t1 = time.perf_counter()
        from lancedb.index import IvfFlat

        table.create_index("vector", config=IvfFlat(distance_type="l2", num_partitions=a.nlist))
        index_s = time.perf_counter() - t1

    nprobes = [int(p) for p in a.nprobes.split(",")] if a.index != "none" else [0]
    configs = []
    cores = os.cpu_count() or 1
    for nprobe in nprobes:
        def query(tbl, q, nprobe=nprobe):
            s = tbl.search(q).metric("l2").limit(10).select(["id"])
            if nprobe:
                s = s.nprobes(nprobe)
            return s.to_arrow()["id"].to_numpy()

        # Estimate the speed on two probes, then size the run to its share of the time budget.
        t2 = time.perf_counter()
        for q in probes[:2]:
            query(table, q)
        single_s = (time.perf_counter() - t2) / 2
        budget = a.budget_s / len(nprobes)
        count = int(min(len(probes), max(a.threads, budget * cores / max(single_s, 1e-6))))
        found: dict[int, np.ndarray] = {}

        def call(tbl, i, query=query, found=found):
            found[i] = query(tbl, probes[i])
            return 1

        result = run_concurrent(a.threads, list(range(count)), call, lambda: db.open_table("bench"))
        recall = float(np.mean([len(set(found[i].tolist()) & set(truth[i, :10].tolist())) / 10 for i in found]))
        configs.append({"nprobe": nprobe or None, "probes": count, "qps": round(result.items_per_s, 2),
                        "recall_at_10": round(recall, 4), **result.summary()})
    out = {"peer": f"lancedb {lancedb.__version__}", "index": a.index, "nlist": a.nlist if a.index != "none" else None,
           "n": n, "load_s": round(load_s, 1), "index_s": round(index_s, 1), "threads": a.threads, "configs": configs}
    a.out.write_text(json.dumps(out) + "\n")
    print(json.dumps(out))
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
