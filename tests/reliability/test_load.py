"""Load: 64 concurrent clients of mixed enroll, identify and verify against one `twinsearch serve`.

TWINSEARCH_LOAD_CLIENTS clients (default 64), each with its own channel, call for
TWINSEARCH_LOAD_SECONDS seconds (default 60, the issue's figure; shorter for a quick look:
`TWINSEARCH_LOAD_SECONDS=10 pytest tests/reliability/test_load.py`) a mix of 20% Enroll (1 to 4 items,
images or vectors, with client ids), 35% Identify (an image or a vector probe, k=5), 35% Verify (a
pair of images), 4% Delete (items the same client enrolled), 3% Search and 3% ListClasses. Checked:
no call fails; the server's resident memory after the warm-up (the first quarter) stays flat (within
100 MiB of its level at the end of the warm-up); the gallery holds exactly the acknowledged
enrollments minus the acknowledged deletions.
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
    deleted = [0]
    start = threading.Barrier(CLIENTS + 1)

    def client_loop(t: int) -> None:
        rng = np.random.default_rng(t)
        n = 0
        mine: list[str] = []
        with Client(server.address, timeout=60.0) as c:
            start.wait()
            while not stop.is_set():
                op = str(rng.choice(["enroll", "identify", "verify", "delete", "search", "classes"],
                                    p=[0.2, 0.35, 0.35, 0.04, 0.03, 0.03]))
                try:
                    if op == "enroll":
                        m = int(rng.integers(1, 5))
                        inputs = [IMAGES[int(rng.integers(64))] if rng.random() < 0.5 else VECTORS[int(rng.integers(256))]
                                  for _ in range(m)]
                        ids = [f"t{t}-{n + j}" for j in range(m)]
                        n += m
                        result = c.enroll(GALLERY, f"class-{int(rng.integers(10))}", inputs, ids=ids)
                        assert all(x.created for x in result.stored)
                        mine.extend(ids)
                        with lock:
                            enrolled[0] += m
                    elif op == "identify":
                        probe = IMAGES[int(rng.integers(64))] if rng.random() < 0.5 else VECTORS[int(rng.integers(256))]
                        assert len(c.identify(GALLERY, probe, k=5).candidates) == 5
                    elif op == "verify":
                        c.verify(IMAGES[int(rng.integers(64))], IMAGES[int(rng.integers(64))])
                    elif op == "delete":
                        gone = [mine.pop(int(rng.integers(len(mine)))) for _ in range(min(len(mine), 2))]
                        if gone:
                            assert c.delete(GALLERY, client_ids=gone) == len(gone)
                            with lock:
                                deleted[0] += len(gone)
                    elif op == "search":
                        assert len(c.search(GALLERY, VECTORS[int(rng.integers(256))], k=10)) == 10
                    else:
                        assert c.class_page(GALLERY, page_size=5).classes
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
    assert all(calls[op] for op in ("enroll", "identify", "verify", "delete", "search", "classes"))
    assert stored == enrolled[0] - deleted[0], "acknowledged enrollments minus deletions and stored items differ"
    assert max(after) - warm[-1] < 100, f"memory grew from {warm[-1]:.0f} to {max(after):.0f} MiB under load"
