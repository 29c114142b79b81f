"""Gallery figures: identify throughput and latency, exact vs approximate, start-up and memory, the peer.

1. Two stores are built in their own processes (`bench.build_store`): one exact gallery and one IVF
   gallery of the same seeded clustered vectors (1,000,000 x 128, 100,000 classes at full size).
2. A server on an empty store gives the start-up and memory of the interpreter and model alone.
3. A server on the exact store: `startup_s_1m` (spawn to "serving"), `rss_mb_1m` (right after start),
   then `identify_qps` and latency from 32 concurrent clients, one vector probe per call, k=5, then
   one client's latency (`identify_one_client_p50_ms`) and memory after it (`rss_mb_1m_after_one_client`,
   with the float16 copy that lone queries against an exact gallery build, `server/halfscreen.py`).
4. In-process FAISS (`IndexFlatL2` over the same vectors) searches the same probes in batches of 256
   at the depth the server searches (32): `identify_ratio` is the server's QPS over it. The exact top
   10 of each probe is the ground truth for recall.
5. A server on the IVF store: its identify QPS from the same 32 clients (`ann_qps_ratio` over the
   exact server's) and recall@10 of its Search against the ground truth (`ann_recall_at_10`).
6. The peer (`bench.peer_lance`, LanceDB) holds the same vectors with an IVF_FLAT index of as many
   cells as ours and answers the same probes from 32 threads in-process, probing a quarter, half and
   all of our number of cells. `peer_qps_ratio` is our QPS over its QPS at equal or better recall for
   us: its fastest configuration whose recall our IVF server reaches, against our IVF server (else its
   lowest-recall one against our exact server). `--peer none`: its exhaustive search (recall 1.0)
   against our exact server.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import BenchError, Clustered, run_concurrent, start_server

log = logging.getLogger("bench")

CLIENTS = 32
DEPTH = 32  # what the store searches for identify(k=5, nearest): max(2 * k, 32)
REF_BATCH = 256


def _build(data: Path, size: dict, dim: int, fingerprint: str, kind: str) -> dict:
    cmd = [sys.executable, "-m", "bench.build_store", "--data", str(data), "--n", str(size["n"]),
           "--classes", str(size["classes"]), "--dim", str(dim), "--fingerprint", fingerprint, "--kind", kind]
    if kind == "ivf":
        cmd += ["--nlist", str(size["nlist"]), "--nprobe", str(size["nprobe"])]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if out.returncode:
        raise BenchError(f"building the {kind} store failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _identify_load(address: str, probes: np.ndarray, clients: int, warmup: int) -> dict:
    from twinsearch.client import Client

    def call(client, i):
        client.identify("bench", probes[i], k=5)
        return 1

    res = run_concurrent(clients, list(range(len(probes))), call,
                         lambda: Client(address, timeout=600.0), warmup=warmup)
    if res.errors:
        raise BenchError(f"identify load: {res.errors} errors, first: {res.first_error}")
    return res.summary()


def _search_recall(address: str, probes: np.ndarray, truth: np.ndarray) -> float:
    from twinsearch.client import Client

    hits = []
    with Client(address, timeout=600.0) as c:
        for s in range(0, len(probes), 64):
            found = c.search("bench", list(probes[s:s + 64]), k=10)
            for j, neighbours in enumerate(found):
                got = {int(n.client_id) for n in neighbours}
                hits.append(len(got & set(truth[s + j, :10].tolist())) / 10)
    return float(np.mean(hits))


def _reference(gen: Clustered, probes: np.ndarray, timed: int) -> tuple[dict, np.ndarray]:
    """In-process exact FAISS over the same vectors: the exact top DEPTH rows of every probe, and the QPS
    of the first `timed` probes (the ones the server was timed on) in batches of 256."""
    import faiss

    index = faiss.IndexFlatL2(gen.dim)
    for s in range(0, gen.n, 100_000):
        index.add(gen.chunk(s, min(gen.n, s + 100_000))[0])
    index.search(probes[:8], DEPTH)  # warm up
    ids = np.empty((len(probes), DEPTH), dtype=np.int64)
    t0 = time.perf_counter()
    for s in range(0, timed, REF_BATCH):
        stop = min(timed, s + REF_BATCH)
        _, ids[s:stop] = index.search(probes[s:stop], DEPTH)
    seconds = time.perf_counter() - t0
    for s in range(timed, len(probes), REF_BATCH):
        _, ids[s:s + REF_BATCH] = index.search(probes[s:s + REF_BATCH], DEPTH)
    del index
    return {"qps": round(timed / seconds, 1), "batch": REF_BATCH, "depth": DEPTH,
            "threads": faiss.omp_get_max_threads(), "probes": timed}, ids


def run(size: dict, model: Path, fingerprint: str, dim: int, work: Path, peer: str) -> dict:
    shutil.rmtree(work, ignore_errors=True)  # a fresh scratch folder: stores are built anew
    work.mkdir(parents=True)
    gen = Clustered(size["n"], size["classes"], dim)
    probes, _ = gen.probes(size["probes"])
    ann_probes, _ = gen.probes(size["ann_probes"], seed=100)
    out: dict = {"gallery": {"n": gen.n, "classes": gen.n_classes, "dim": dim, "spread": gen.spread,
                             "clients": CLIENTS}}

    log.info("building the exact and IVF stores of %d vectors", gen.n)
    out["build_exact"] = _build(work / "exact", size, dim, fingerprint, "exact")
    out["build_ivf"] = _build(work / "ivf", size, dim, fingerprint, "ivf")

    with start_server(work / "empty", model) as empty:
        out["startup_s_empty"] = round(empty.startup_s, 2)
        out["rss_mb_empty"] = round(empty.rss_mb(), 1)

    log.info("exact server: start-up, memory, identify from %d clients", CLIENTS)
    with start_server(work / "exact", model) as srv:
        out["startup_s_1m"] = round(srv.startup_s, 2)
        out["rss_mb_1m"] = round(srv.rss_mb(), 1)
        exact = _identify_load(srv.address, probes, CLIENTS, warmup=CLIENTS)
        out["rss_mb_1m_after_load"] = round(srv.rss_mb(), 1)
        out["identify_one_client"] = _identify_load(srv.address, probes[:size["one_client_calls"]], 1, warmup=2)
        out["rss_mb_1m_after_one_client"] = round(srv.rss_mb(), 1)  # with the float16 copy lone queries build
    out["identify_exact"] = exact
    out["identify_one_client_p50_ms"] = out["identify_one_client"]["p50_ms"]
    out["identify_qps"] = exact["items_per_s"]
    out["identify_p50_ms"], out["identify_p99_ms"] = exact["p50_ms"], exact["p99_ms"]

    log.info("in-process FAISS reference")
    recall_n = min(len(ann_probes), size["recall_probes"])
    ref, truth = _reference(gen, np.concatenate([probes, ann_probes[:recall_n]]), timed=len(probes))
    truth_ann = truth[len(probes):]
    out["identify_inprocess"] = ref
    out["identify_inprocess_qps"] = ref["qps"]
    out["identify_ratio"] = round(exact["items_per_s"] / ref["qps"], 3)

    log.info("IVF server: identify from %d clients, search recall", CLIENTS)
    with start_server(work / "ivf", model) as srv:
        ivf = _identify_load(srv.address, ann_probes, CLIENTS, warmup=CLIENTS)
        out["ann_recall_at_10"] = round(_search_recall(srv.address, ann_probes[:recall_n], truth_ann), 4)
    out["identify_ivf"] = ivf
    out["ann"] = {"kind": "ivf", "nlist": size["nlist"], "nprobe": size["nprobe"], "recall_probes": recall_n,
                  "qps": ivf["items_per_s"], "p50_ms": ivf["p50_ms"], "p99_ms": ivf["p99_ms"]}
    out["ann_qps_ratio"] = round(ivf["items_per_s"] / exact["items_per_s"], 2)

    if peer == "skip":
        out["peer"] = {"skipped": "--no-peer"}
    else:
        out.update(_peer(gen, ann_probes[:recall_n], truth_ann, work, size, peer, exact, ivf, out["ann_recall_at_10"]))
    return out


def _peer(gen: Clustered, probes: np.ndarray, truth: np.ndarray, work: Path, size: dict, index: str,
          exact: dict, ivf: dict, ivf_recall: float) -> dict:
    try:
        import lancedb  # noqa: F401
    except ImportError:
        msg = "LanceDB is not installed: `pip install lancedb` (or the `bench` extra) to measure the peer"
        log.warning(msg)
        return {"peer": {"skipped": msg}, "peer_qps_ratio": None, "peer_recall": None}
    np.save(work / "vectors.npy", gen.all())
    np.save(work / "probes.npy", probes)
    np.save(work / "truth.npy", truth)
    cmd = [sys.executable, "-m", "bench.peer_lance", "--vectors", str(work / "vectors.npy"),
           "--probes", str(work / "probes.npy"), "--truth", str(work / "truth.npy"),
           "--out", str(work / "peer.json"), "--threads", str(CLIENTS), "--budget-s", str(size["peer_budget_s"]),
           "--index", index, "--nlist", str(size["nlist"]),
           "--nprobes", ",".join(str(max(1, size["nprobe"] // d)) for d in (4, 2, 1))]
    log.info("peer: %s", " ".join(cmd[2:4]))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    (work / "vectors.npy").unlink(missing_ok=True)
    if done.returncode:
        raise BenchError(f"the peer run failed:\n{done.stderr[-3000:]}")
    peer = json.loads((work / "peer.json").read_text())
    # At equal or better recall for us: the peer's fastest configuration whose recall our IVF server
    # reaches, against our IVF server; when our IVF recall is below all of the peer's, the peer's
    # lowest-recall configuration against our exact server (recall 1.0).
    within = [cfg for cfg in peer["configs"] if cfg["recall_at_10"] <= ivf_recall]
    if within:
        theirs, ours, which = max(within, key=lambda cfg: cfg["qps"]), ivf, "ivf"
    else:
        theirs, ours, which = min(peer["configs"], key=lambda cfg: cfg["recall_at_10"]), exact, "exact"
    return {"peer": peer, "peer_recall": theirs["recall_at_10"], "peer_qps": theirs["qps"],
            "peer_nprobe": theirs["nprobe"], "peer_compared_with": which,
            "peer_qps_ratio": round(ours["items_per_s"] / theirs["qps"], 2) if theirs["qps"] else None}
