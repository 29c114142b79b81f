"""Gallery core figures: enroll throughput, batched exact identify throughput, start-up time and RSS.

    .venv/bin/python bench/core_bench.py --n 100000          # about a minute on 2 cores
    .venv/bin/python bench/core_bench.py --n 1000000         # several minutes; run it once on a shared box

Vectors are 128-d unit float32 rows around n/10 class centres (10 exemplars per class), enrolled in
batches of 10,000 with client ids, into an exact gallery. Identify is Scoring.NEAREST, k=5, in
batches of 256 probes. Each phase runs in its own process so that start-up time and resident memory
are those of a fresh server opening the store: once from its snapshot, once rebuilding from SQLite.
Writes one JSON line per phase to stdout and bench/results/core_bench_<n>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 128
PER_CLASS = 10
BATCH = 10_000
QUERY_BATCH = 256


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB."""
    cur = peak = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def chunk(n_total: int, start: int, size: int) -> tuple[np.ndarray, list[str]]:
    """Rows start..start+size of the synthetic gallery, the same on every call."""
    n_classes = max(1, n_total // PER_CLASS)
    rng = np.random.default_rng(start)
    cls = np.arange(start, start + size) % n_classes
    # Class centres from a per-class seed, so any chunk can be made alone without holding all n rows.
    centres = np.stack([np.random.default_rng(int(c)).normal(size=DIM) for c in cls]).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres + 0.05 * rng.normal(size=(size, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [f"class-{c}" for c in cls]


def queries(n_total: int, count: int) -> np.ndarray:
    x, _ = chunk(n_total, 0, min(count, n_total))
    rng = np.random.default_rng(7)
    q = x + 0.03 * rng.normal(size=x.shape).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def measure_identify(store, n_total: int, batches: int) -> dict:
    from twinsearch.server.thresholds import ThresholdPolicy

    policy = ThresholdPolicy(None)
    q = queries(n_total, QUERY_BATCH * batches)
    store.identify("bench", q[:8], policy=policy, k=5, threshold=0.5)  # warm up
    t = time.perf_counter()
    hits = 0
    for b in range(batches):
        part = q[b * QUERY_BATCH:(b + 1) * QUERY_BATCH]
        res = store.identify("bench", part, policy=policy, k=5, threshold=0.5)
        hits += sum(r.label is not None for r in res)
    dt = time.perf_counter() - t
    return {"identify_qps": round(QUERY_BATCH * batches / dt, 1), "identify_batch": QUERY_BATCH,
            "identify_queries": QUERY_BATCH * batches, "identified_known": hits}


def phase_build(data: Path, n: int, query_batches: int) -> dict:
    from twinsearch.server.store import GalleryStore

    store = GalleryStore.open(data)
    store.create_gallery("bench", fingerprint="bench-model", dim=DIM)
    gen = 0.0
    t = time.perf_counter()
    for start in range(0, n, BATCH):
        g0 = time.perf_counter()
        x, labels = chunk(n, start, min(BATCH, n - start))
        gen += time.perf_counter() - g0
        store.enroll("bench", labels, x, client_ids=[f"item-{start + i}" for i in range(len(x))])
    enroll_s = time.perf_counter() - t - gen
    out = {"phase": "build", "n": n, "enroll_s": round(enroll_s, 2),
           "enroll_vectors_per_s": round(n / enroll_s, 1)}
    out.update(measure_identify(store, n, query_batches))
    t = time.perf_counter()
    store.close()
    out["close_with_snapshot_s"] = round(time.perf_counter() - t, 2)
    out["sqlite_mb"] = round(sum(p.stat().st_size for p in data.glob("gallery.sqlite3*")) / 2**20, 1)
    out["snapshot_mb"] = round(sum(p.stat().st_size for p in (data / "snapshots").iterdir()) / 2**20, 1)
    return out


def phase_open(data: Path, n: int, query_batches: int, how: str) -> dict:
    from twinsearch.server.store import GalleryStore

    base = rss_mb()[0]  # interpreter, numpy, faiss loaded
    t = time.perf_counter()
    store = GalleryStore.open(data)
    startup = time.perf_counter() - t
    cur, peak = rss_mb()
    out = {"phase": f"open_{how}", "n": n, "load": store.load_report["bench"], "startup_s": round(startup, 2),
           "rss_mb": round(cur, 1), "rss_peak_mb": round(peak, 1), "rss_before_open_mb": round(base, 1)}
    out.update(measure_identify(store, n, query_batches))
    out["rss_after_queries_mb"] = round(rss_mb()[0], 1)
    store.close(snapshot=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--query-batches", type=int, default=4)
    ap.add_argument("--phase", choices=["build", "snapshot", "rebuild"], help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import faiss  # noqa: F401  (loaded before the RSS baseline)

    from twinsearch.server.store import GalleryStore  # noqa: F401

    if args.phase == "build":
        print(json.dumps(phase_build(args.data, args.n, args.query_batches)))
        return
    if args.phase:
        print(json.dumps(phase_open(args.data, args.n, args.query_batches, args.phase)))
        return

    data = Path(tempfile.mkdtemp(prefix="core_bench_"))
    results = []
    try:
        for phase in ("build", "snapshot", "rebuild"):
            if phase == "rebuild":
                shutil.rmtree(data / "snapshots")
            cmd = [sys.executable, __file__, "--n", str(args.n), "--query-batches", str(args.query_batches),
                   "--phase", phase, "--data", str(data)]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results.append(json.loads(line))
            print(line, flush=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    meta = {"cpu_count": os.cpu_count(), "faiss_threads": _faiss_threads(), "dim": DIM, "per_class": PER_CLASS,
            "enroll_batch": BATCH, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": _commit(), "load_average": os.getloadavg()}
    out = Path(__file__).resolve().parent / "results" / f"core_bench_{args.n}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except OSError:
        return ""


def _faiss_threads() -> int:
    import faiss

    return faiss.omp_get_max_threads()


if __name__ == "__main__":
    main()
