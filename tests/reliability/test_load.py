"""Load: 64 concurrent clients of mixed enroll, identify and verify against one `twinsearch serve`.

TWINSEARCH_LOAD_CLIENTS clients (default 64), each with its own channel, call for
TWINSEARCH_LOAD_SECONDS seconds (default 60, the issue's figure; shorter for a quick look:
`TWINSEARCH_LOAD_SECONDS=10 pytest tests/reliability/test_load.py`) a mix of 20% Enroll (1 to 4 items,
images or vectors, with client ids), 40% Identify (an image or a vector probe, k=5) and 40% Verify (a
pair of images). Checked: no call fails; the server's resident memory after the warm-up (the first
quarter) stays flat (within 100 MiB of its level at the end of the warm-up); every acknowledged item
is stored once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from twinsearch.client import Client

from .conftest import env_int, glyph_png, unit_vectors

CLIENTS = env_int("TWINSEARCH_LOAD_CLIENTS", 64)
SECONDS = env_int("TWINSEARCH_LOAD_SECONDS", 60)
GALLERY = "load"
IMAGES = [glyph_png(i) for i in range(64)]
VECTORS = unit_vectors(256, seed=3)


@pytest.mark.slow
def test_mixed_load_from_64_clients(serve):
    server = serve("data")
    with Client(server.address, timeout=60.0) as setup:
        setup.create_gallery(GALLERY)
        setup.enroll(GALLERY, [f"class-{i % 10}" for i in range(40)], IMAGES[:20] + list(VECTORS[:20]),
                     ids=[f"seed-{i}" for i in range(40)])
    stop = threading.Event()
    lock = threading.Lock()
    calls: Counter = Counter()
    errors: list[str] = []
    enrolled = [40]
    start = threading.Barrier(CLIENTS + 1)

    def client_loop(t: int) -> None:
        rng = np.random.default_rng(t)
        n = 0
        with Client(server.address, timeout=60.0) as c:
            start.wait()
            while not stop.is_set():
                op = str(rng.choice(["enroll", "identify", "verify"], p=[0.2, 0.4, 0.4]))
                try:
                    if op == "enroll":
                        m = int(rng.integers(1, 5))
                        inputs = [IMAGES[int(rng.integers(64))] if rng.random() < 0.5 else VECTORS[int(rng.integers(256))]
                                  for _ in range(m)]
                        ids = [f"t{t}-{n + j}" for j in range(m)]
                        n += m
                        result = c.enroll(GALLERY, f"class-{int(rng.integers(10))}", inputs, ids=ids)
                        assert all(x.created for x in result.stored)
                        with lock:
                            enrolled[0] += m
                    elif op == "identify":
                        probe = IMAGES[int(rng.integers(64))] if rng.random() < 0.5 else VECTORS[int(rng.integers(256))]
                        assert len(c.identify(GALLERY, probe, k=5).candidates) == 5
                    else:
                        c.verify(IMAGES[int(rng.integers(64))], IMAGES[int(rng.integers(64))])
                    with lock:
                        calls[op] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    with lock:
                        errors.append(f"{op}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client_loop, args=(t,), daemon=True) for t in range(CLIENTS)]
    for th in threads:
        th.start()
    start.wait()
    began = time.monotonic()
    samples: list[tuple[float, float]] = []
    while time.monotonic() - began < SECONDS:
        samples.append((time.monotonic() - began, server.rss_mb()))
        time.sleep(0.5)
    stop.set()
    for th in threads:
        th.join(120)
    assert server.alive()
    with Client(server.address, timeout=60.0) as check:
        stored = check.get_gallery(GALLERY).item_count

    warm = [rss for s, rss in samples if s <= SECONDS / 4]
    after = [rss for s, rss in samples if s > SECONDS / 4]
    total = sum(calls.values())
    print(f"\nload: {CLIENTS} clients for {SECONDS} s: {total} calls served ({dict(calls)}), {len(errors)} errors, "
          f"{total / SECONDS:.0f} calls/s; server RSS {warm[-1]:.0f} MiB after warm-up, "
          f"{min(after):.0f} to {max(after):.0f} MiB after")
    assert not errors, f"{len(errors)} calls failed, first: {errors[:5]}"
    assert calls["enroll"] and calls["identify"] and calls["verify"]
    assert stored == enrolled[0], "acknowledged items and stored items differ"
    assert max(after) - warm[-1] < 100, f"memory grew from {warm[-1]:.0f} to {max(after):.0f} MiB under load"
