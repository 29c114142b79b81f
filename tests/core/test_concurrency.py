"""Many readers and one writer: a query sees a batch wholly or not at all; an acknowledged change is visible."""

from __future__ import annotations

import threading

import numpy as np

from twinsearch.client.types import Scoring
from twinsearch.server.thresholds import ThresholdPolicy

from .conftest import unit

DIM = 32
N = 40        # items per batch
BATCHES = 30


def test_readers_see_whole_batches(store):
    rng = np.random.default_rng(5)
    centres = unit(rng.normal(size=(BATCHES, DIM)))
    batches = [unit(centres[b] + 0.01 * rng.normal(size=(N, DIM))) for b in range(BATCHES)]
    store.create_gallery("g", fingerprint="m", dim=DIM)
    store.enroll("g", ["seed"], unit(rng.normal(size=(1, DIM))))
    started = [0]  # batches the writer has begun
    acked = [0]    # batches whose enroll has returned (acknowledged)
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]
    policy = ThresholdPolicy(None)

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                b = int(r.integers(0, started[0] + 1)) % BATCHES
                # Acknowledged before these reads began and never deleted (the writer deletes the
                # batches b % 3 == 0): every read must see all of it.
                visible = b < acked[0] and b % 3 != 0
                hits = store.search("g", centres[b:b + 1], k=N + 5)[0]
                seen = sum(h.label == f"b{b}" for h in hits)
                if seen not in ((N,) if visible else (0, N)):
                    errors.append(f"search saw {seen} of batch {b}")
                # The probe is batch b's centre: its class is at ~0.01, every other one beyond 0.5.
                ident = store.identify("g", centres[b:b + 1], policy=policy, k=2, threshold=0.5,
                                       scoring=Scoring.PROTOTYPE)[0]
                if ident.label not in ((f"b{b}",) if visible else (f"b{b}", None)):
                    errors.append(f"identify gave {ident.label} for the centre of batch {b}")
                counts = {c.label: c.count for c in store.list_classes("g", page_size=1000).classes}
                if counts.get(f"b{b}", 0) not in ((N,) if visible else (0, N)):
                    errors.append(f"list_classes saw {counts.get(f'b{b}', 0)} of batch {b}")
                reads[0] += 1
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for b in range(BATCHES):
            started[0] = b
            store.enroll("g", [f"b{b}"] * N, batches[b])
            acked[0] = b + 1
            # acknowledged: the very next query sees all of it
            hits = store.search("g", centres[b:b + 1], k=N)[0]
            assert sum(h.label == f"b{b}" for h in hits) == N
            if b % 3 == 2:
                assert store.delete_class("g", f"b{b - 2}") == N
                hits = store.search("g", centres[b - 2:b - 1], k=N)[0]
                assert not any(h.label == f"b{b - 2}" for h in hits)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    assert reads[0] >= 20  # the readers really ran alongside the writer
