"""Encoder throughput (server Embed against the model in-process) and verification latency.

`encoder_ratio`: images/s of the server's Embed with 16 concurrent clients, each call a batch of
`EMBED_CALL` encoded PNG images, over the images/s of the same model in-process (`EncoderModel.embed`
on the same PNG bytes: decode, preprocess and forward pass) at its best batch size. Both sides
decode the same Omniglot PNG files (105 x 105, resized by the model's preprocessing), and both are
timed warm: the in-process side after its batch-size sweep, the server after one untimed pass of the
same load (its rate is kept as `encoder_server_first_pass_images_per_s`: on a fresh server it has
varied from under half of the later passes' rate to equal; results without that key timed this first pass).

A pass of either side takes about two seconds, and this machine's speed moves by a sixth from one such
stretch to the next, so the two sides alternate: in-process, server, in-process, ... (`ROUNDS` server
passes, each between two in-process passes). Each server pass is divided by the mean of the two passes
around it, and `encoder_ratio` is the median of those ratios (results without `encoder_alternated` timed
one pass of each side, one after the other). `encoder_inprocess_images_per_s` and
`encoder_server_images_per_s` are the medians of each side's passes.

`verify_p50_ms` / `verify_p99_ms`: one client, one pair of PNG images per call, calls one after the
other (no batching help from other callers).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from bench.common import BenchError, percentiles, run_concurrent

log = logging.getLogger("bench")

CLIENTS = 16
EMBED_CALL = 16
ROUNDS = 3
BATCH_SIZES = (16, 32, 64, 128, 256, 512)


def _rate(model, images: list[bytes], bs: int) -> float:
    t0 = time.perf_counter()
    for s in range(0, len(images), bs):
        model.embed(images[s:s + bs])
    return len(images) / (time.perf_counter() - t0)


def inprocess(model, images: list[bytes], batch_sizes=BATCH_SIZES, sweep: int = 512, rounds: int = 2) -> dict:
    """Images/s of `model.embed` over `images` at its best batch size: each size is tried on the first
    `sweep` images (after a warm-up batch), `rounds` times in turn (the mean is kept: one try of half a
    second can be a sixth off), then the best one runs over all of them."""
    model.embed(images[:32])
    part = images[:sweep]
    sizes = [bs for bs in batch_sizes if bs <= len(part)]
    tries = {bs: [] for bs in sizes}
    for _ in range(rounds):
        for bs in sizes:
            tries[bs].append(_rate(model, part, bs))
    rates = {bs: round(float(np.mean(r)), 1) for bs, r in tries.items()}
    best = max(rates, key=rates.get)
    # For context: the forward pass alone, on images decoded and preprocessed beforehand.
    arrays = np.stack([model.preprocess.load(b) for b in images])
    t0 = time.perf_counter()
    for s in range(0, len(arrays), best):
        model.embed_arrays(arrays[s:s + best])
    forward = len(arrays) / (time.perf_counter() - t0)
    return {"images": len(images), "sweep_images": len(part), "sweep_images_per_s_by_batch": rates,
            "best_batch": best, "images_per_s": round(_rate(model, images, best), 1),
            "forward_only_images_per_s": round(forward, 1)}


def server_embed(address: str, images: list[bytes]) -> dict:
    from twinsearch.client import Client

    calls = [images[s:s + EMBED_CALL] for s in range(0, len(images), EMBED_CALL)]

    def call(client, batch):
        client.embed(batch)
        return len(batch)

    res = run_concurrent(CLIENTS, calls, call, lambda: Client(address, timeout=600.0), warmup=CLIENTS)
    if res.errors:
        raise BenchError(f"Embed load: {res.errors} errors, first: {res.first_error}")
    return {"clients": CLIENTS, "images_per_call": EMBED_CALL, **res.summary()}


def verify_latency(address: str, images: list[bytes], calls: int) -> dict:
    from twinsearch.client import Client

    lat = []
    with Client(address, timeout=60.0) as c:
        for i in range(10):  # warm up
            c.verify(images[i], images[i + 1])
        for i in range(calls):
            a, b = images[(2 * i) % len(images)], images[(2 * i + 1) % len(images)]
            t0 = time.perf_counter()
            c.verify(a, b)
            lat.append(time.perf_counter() - t0)
    return {"calls": calls, **percentiles(lat)}


def alternated(inprocess_pass, server_pass, rounds: int = ROUNDS) -> dict:
    """`rounds` server passes, each between two in-process passes (callables returning images/s); each
    server pass over the mean of the two around it, and the medians."""
    local, remote, ratios = [inprocess_pass()], [], []
    for _ in range(rounds):
        remote.append(server_pass())
        local.append(inprocess_pass())
        ratios.append(remote[-1] / ((local[-2] + local[-1]) / 2))
    return {"inprocess_images_per_s": [round(x, 1) for x in local],
            "server_images_per_s": [round(x, 1) for x in remote], "ratios": [round(x, 3) for x in ratios],
            "inprocess_median": round(float(np.median(local)), 1), "server_median": round(float(np.median(remote)), 1),
            "ratio_median": round(float(np.median(ratios)), 3)}


def run(address: str, model, images: list[bytes], verify_calls: int) -> dict:
    log.info("encoder: in-process over %d images", len(images))
    local = inprocess(model, images)
    log.info("encoder: server Embed from %d clients (a first pass, then %d alternating with in-process)",
             CLIENTS, ROUNDS)
    first = server_embed(address, images)
    passes = alternated(lambda: _rate(model, images, local["best_batch"]),
                        lambda: server_embed(address, images)["items_per_s"])
    log.info("verify latency: %d calls", verify_calls)
    verify = verify_latency(address, images, verify_calls)
    return {
        "encoder_inprocess": local,
        "encoder_alternated": passes,
        "encoder_server_first_pass": first,
        "encoder_server_first_pass_images_per_s": first["items_per_s"],
        "encoder_inprocess_images_per_s": passes["inprocess_median"],
        "encoder_inprocess_forward_only_images_per_s": local["forward_only_images_per_s"],
        "encoder_server_images_per_s": passes["server_median"],
        "encoder_ratio": passes["ratio_median"],
        "verify": verify,
        "verify_p50_ms": verify["p50_ms"],
        "verify_p99_ms": verify["p99_ms"],
    }
