"""A process killed with SIGKILL in the middle of enrolling loses nothing acknowledged, keeps no half batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from twinsearch.server.store import GalleryStore

ROOT = Path(__file__).resolve().parents[2]
BATCH = 50

CHILD = """
import sys
import numpy as np
from twinsearch.server.store import GalleryStore
store = GalleryStore.open(sys.argv[1])
if not any(g.name == "g" for g in store.list_galleries()):
    store.create_gallery("g", fingerprint="m", dim=32)
start = int(sys.argv[2])
rng = np.random.default_rng(start)
for b in range(start, start + 100000):
    v = rng.normal(size=(BATCH, 32)).astype(np.float32)
    got = store.enroll("g", [f"b{b}"] * len(v), v, client_ids=[f"b{b}-{i}" for i in range(len(v))])
    print("ack", b, got[0].id, got[-1].id, flush=True)
    if b % 7 == 0:
        store.snapshot()  # so that the next start catches up from a snapshot, not only rebuilds
""".replace("BATCH", str(BATCH))


def _ack(line: str) -> tuple[int, int, int] | None:
    """(batch, first id, last id) of a whole "ack" line the child printed, else None."""
    fields = line.split()
    if not line.endswith("\n") or len(fields) != 4 or fields[0] != "ack":
        return None
    return int(fields[1]), int(fields[2]), int(fields[3])


def run_and_kill(data: Path, start: int, acks_wanted: int) -> list[tuple[int, int, int]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("proto", "encoder", "server",
                                                                              "client")))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(start)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    acks = []
    try:
        deadline = time.monotonic() + 60
        while len(acks) < acks_wanted and time.monotonic() < deadline:
            ack = _ack(proc.stdout.readline())
            if ack is None:  # the child ended
                break
            acks.append(ack)
        time.sleep(0.013 * (start % 5))  # land the kill at different points of a batch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(acks) == acks_wanted, proc.stderr.read()
    # Acknowledgements the child printed before the kill but this process had not read yet (a busy
    # machine can leave a few in the pipe) are acknowledgements too.
    acks.extend(ack for line in proc.stdout.read().splitlines(keepends=True) if (ack := _ack(line)))
    return acks


def test_sigkill_mid_enroll_loses_nothing_acknowledged(tmp_path):
    acked: list[tuple[int, int, int]] = []
    for round_, start in enumerate((0, 1000, 2000)):
        acked += run_and_kill(tmp_path, start, 12 + 3 * round_)
        with GalleryStore.open(tmp_path) as store:
            classes = store.list_classes("g", page_size=10_000).classes
            counts = {c.label: c.count for c in classes}
            # whole batches only
            assert all(n == BATCH for n in counts.values()), counts
            # every acknowledged batch is there, with the ids it was acknowledged with
            for b, first, _ in acked:
                assert counts.get(f"b{b}") == BATCH
                hits = store.search("g", store_vectors(store, first), k=1)
                assert hits[0][0].id == first
            # at most one unacknowledged batch per killed run made it (committed, not yet acked)
            assert len(counts) - len(acked) <= round_ + 1
            assert store.get_gallery("g").item_count == BATCH * len(counts)


def store_vectors(store: GalleryStore, item_id: int):
    import numpy as np

    (blob,) = store.db._reader().execute("SELECT vector FROM items WHERE id = ?", (item_id,)).fetchone()
    return np.frombuffer(blob, dtype=np.float32).reshape(1, -1)
