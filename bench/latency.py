"""Single-call latency, and where its time goes: one client, calls one after the other, idle server.

    .venv/bin/python -m bench.run --only latency     # as a section of `make bench`
    .venv/bin/python -m bench.latency [--calls 300]  # on its own, printing the breakdown

Figures:
- `verify_one_client_p50_ms` / `_p99_ms`: Verify of one pair of PNG images (Omniglot, 105 x 105).
- `identify_100k_one_client_p50_ms` / `_p99_ms`: Identify with one PNG probe, k=5, against an exact
  gallery of 100,000 items in 10,000 classes.
- `verify_class_100k_one_client_p50_ms`, `verify_class_cohort_100k_one_client_p50_ms` (and `_p99_ms`):
  VerifyClass of one PNG probe against one class of that gallery, plain and cohort-normalized (which
  ranks the gallery's classes as Identify does, to find the nearest other class).
- `verify_spaced_p50_ms` / `_p99_ms`: Verify as above with the client idle for SPACING_S (20 ms) before
  each call, as a service verifying one document at a time calls: the figures above are back to back,
  with the machine's cores awake; these find them idle.
- `verify_floor_ms`: what a Verify cannot cost less than on this machine while its answers stay the
  same: the median forward pass of one pair (the model file's graph in this process, as the server runs
  it, on images decoded beforehand) plus the median call that does no work on the same server
  (`get_gallery` of a gallery that does not exist: NOT_FOUND), each over `calls` calls right after the
  Verify figure. Decoding the two images and answering come on top. A Verify target under this floor
  cannot be met on the machine that measured it.

Breakdown: the server's own stage histograms (`twinsearch_stage_seconds` and
`twinsearch_rpc_latency_seconds` on its /metrics endpoint), read before and after the timed calls, give
the mean time per call of each stage: decode (decoding and preprocessing the call's images, on the gRPC
thread), encoder_queue (waiting for the encoder thread), encoder_run (the forward pass), search_queue,
search_run (the gallery search with class scoring). "server, other" is the server's time for the call
less those stages (validation, scoring of verify pairs, building the response); "gRPC and client" is
the client's time less the server's (serialisation on both sides, the loopback network, the client
library). Means, not medians: a breakdown must add up.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.common import BenchError, model_path, omniglot_pngs, percentiles
from twinsearch.client.server_process import ServerProcess, ServerStartError

log = logging.getLogger("bench")

GALLERY_N = 100_000
GALLERY_CLASSES = 10_000
STAGES = ("decode", "encoder_queue", "encoder_run", "search_queue", "search_run")
SPACING_S = 0.02  # the idle time before each call of the spaced Verify figure


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, tuple[float, float]]:
    """{series: (sum, count)} of the stage and RPC latency histograms on the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("twinsearch_stage_seconds", "twinsearch_rpc_latency_seconds"):
            continue
        for sample in family.samples:
            label = sample.labels.get("stage") or f"rpc:{sample.labels.get('method')}"
            if sample.name.endswith("_sum"):
                out.setdefault(label, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_count"):
                out.setdefault(label, [0.0, 0.0])[1] = sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def _timed(call, calls: int, port: int, method: str, spacing_s: float = 0.0) -> dict:
    """Run `call(i)` `calls` times one after the other (`spacing_s` idle before each); latency percentiles
    and the mean per stage (ms)."""
    for i in range(10):  # warm-up, outside the figures
        call(i)
    before = _scrape(port)
    latencies = []
    for i in range(calls):
        if spacing_s:
            time.sleep(spacing_s)
        t0 = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - t0)
    after = _scrape(port)

    def mean_ms(series: str) -> float:
        total = after.get(series, (0.0, 0.0))[0] - before.get(series, (0.0, 0.0))[0]
        return round(1000.0 * total / calls, 3)

    client_ms = 1000.0 * float(np.mean(latencies))
    server_ms = mean_ms(f"rpc:{method}")
    stages = {s: mean_ms(s) for s in STAGES}
    breakdown = {**stages, "server, other": round(server_ms - sum(stages.values()), 3),
                 "gRPC and client": round(client_ms - server_ms, 3)}
    return {"calls": calls, **percentiles(latencies), "mean_ms": round(client_ms, 3),
            "server_mean_ms": server_ms, "breakdown_mean_ms": breakdown}


def _median_ms(call, calls: int) -> float:
    for i in range(10):  # warm-up
        call(i)
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t0)
    return percentiles(times)["p50_ms"]


def _floor(client, model_file: Path, images: list[bytes], calls: int) -> dict:
    """The parts of a Verify no change to the server can remove: a pair's forward pass and a call's round
    trip (medians, ms; see the module docstring)."""
    from twinsearch.client.errors import NotFound
    from twinsearch.encoder.model import load_model

    model = load_model(model_file)
    pairs = [np.stack([model.preprocess.load(images[2 * i]), model.preprocess.load(images[2 * i + 1])])
             for i in range(min(calls, len(images) // 2))]
    forward = _median_ms(lambda i: model.embed_arrays(pairs[i % len(pairs)]), calls)

    def no_work(_: int) -> None:
        try:
            client.get_gallery("no-such-gallery")
        except NotFound:
            return
        raise BenchError("get_gallery of a missing gallery answered")

    call = _median_ms(no_work, calls)
    return {"pair_forward_ms": forward, "no_work_call_ms": call, "verify_floor_ms": round(forward + call, 3),
            "runtime": model.runtime}


def _build_gallery(data: Path, fingerprint: str, dim: int) -> None:
    cmd = [sys.executable, "-m", "bench.build_store", "--data", str(data), "--n", str(GALLERY_N),
           "--classes", str(GALLERY_CLASSES), "--dim", str(dim), "--fingerprint", fingerprint, "--kind", "exact"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if out.returncode:
        raise BenchError(f"building the 100k store failed:\n{out.stderr[-3000:]}")


def run(model_file: Path, fingerprint: str, dim: int, work: Path, calls: int) -> dict:
    from twinsearch.client import Client

    images = omniglot_pngs(2 * calls + 40, seed=1)
    _build_gallery(work / "latency", fingerprint, dim)
    port = _free_port()
    try:
        srv = ServerProcess.start(work / "latency", model_file, flags=["--metrics-port", str(port)],
                                  timeout_s=300.0)
    except ServerStartError as exc:
        raise BenchError(f"the server did not start: {exc}") from None
    with srv, Client(srv.address, timeout=60.0) as client:
        log.info("latency: %d Verify calls, one pair of images each", calls)
        verify = _timed(lambda i: client.verify(images[2 * i], images[2 * i + 1]), calls, port, "Verify")
        log.info("latency: the floor of a Verify (%d forward passes of a pair in-process, %d no-work calls)",
                 calls, calls)
        floor = _floor(client, model_file, images, calls)
        spaced_calls = max(calls // 3, 10)
        log.info("latency: %d Verify calls %.0f ms apart", spaced_calls, 1000 * SPACING_S)
        spaced = _timed(lambda i: client.verify(images[2 * i], images[2 * i + 1]), spaced_calls, port, "Verify",
                        spacing_s=SPACING_S)
        log.info("latency: %d Identify calls, one image each, %d-item gallery", calls, GALLERY_N)
        identify = _timed(lambda i: client.identify("bench", images[i], k=5), calls, port, "Identify")
        log.info("latency: %d VerifyClass calls each plain and cohort-normalized, one image each", calls)
        claim = _timed(lambda i: client.verify_class("bench", images[i], f"class-{i % GALLERY_CLASSES}",
                                                     threshold=0.5), calls, port, "VerifyClass")
        cohort = _timed(lambda i: client.verify_class("bench", images[i], f"class-{i % GALLERY_CLASSES}",
                                                      threshold=0.5, cohort=True), calls, port, "VerifyClass")
    return {
        "latency": {"verify": verify, "verify_spaced": {**spaced, "spacing_ms": 1000 * SPACING_S},
                    "identify_100k": identify, "verify_class_100k": claim,
                    "verify_class_cohort_100k": cohort, "gallery_n": GALLERY_N, "gallery_classes": GALLERY_CLASSES,
                    "verify_floor": floor},
        "verify_floor_ms": floor["verify_floor_ms"],
        "verify_one_client_p50_ms": verify["p50_ms"],
        "verify_one_client_p99_ms": verify["p99_ms"],
        "verify_spaced_p50_ms": spaced["p50_ms"],
        "verify_spaced_p99_ms": spaced["p99_ms"],
        "identify_100k_one_client_p50_ms": identify["p50_ms"],
        "identify_100k_one_client_p99_ms": identify["p99_ms"],
        "verify_class_100k_one_client_p50_ms": claim["p50_ms"],
        "verify_class_100k_one_client_p99_ms": claim["p99_ms"],
        "verify_class_cohort_100k_one_client_p50_ms": cohort["p50_ms"],
        "verify_class_cohort_100k_one_client_p99_ms": cohort["p99_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300, help="timed calls per figure (default: 300)")
    ap.add_argument("--model", help="model file (default: the model shipped in the package)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    from twinsearch.encoder.card import read_card

    model_file = model_path(args.model)
    card = read_card(model_file)
    with tempfile.TemporaryDirectory(prefix="twinsearch-latency-") as work:
        out = run(model_file, card["fingerprint"], int(card["dim"]), Path(work), args.calls)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
