"""Crash safety with deletions: enrollments, item deletions and class deletions into a server killed with
SIGKILL at random moments.

One client drives the server, one call at a time: enroll a batch (client ids), delete some stored items
by client id, now and then delete a whole class. After a random 0.2 to 1.5 s the server is killed with
SIGKILL (TWINSEARCH_CRASH_DELETE_ROUNDS rounds, default 8) and restarted on the same folder, whose
snapshot is stale (written at a graceful stop before the first round) and deletions happened since.
The call in flight at the kill, if any, is then repeated (enrollment with client ids and deletion by
client id are both idempotent), so the expected content is exact: every item enrolled and not deleted.
After each round the recovered server must hold exactly that (item and class counts) and answer
identify like a store built from scratch from it; deletions are large enough to make the flat index
compact its tombstones.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from twinsearch.client import Client, LocalClient, TwinsearchError

from .conftest import assert_same_candidates, env_int, start_server, unit_vectors

ROUNDS = env_int("TWINSEARCH_CRASH_DELETE_ROUNDS", 8)
GALLERY = "crash-deletes"
CLASSES = 17
POOL = unit_vectors(200_000, seed=21)
TIMEOUT = 30.0


class Driver:
    """Sequential enroll/delete traffic that remembers what the server has acknowledged."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.next_item = 0
        self.live: dict[int, str] = {}   # item number -> label, acknowledged and not deleted
        self.pending = None               # the call in flight: ("enroll", items) or ("delete", items)

    def label(self, i: int) -> str:
        return f"class-{i % CLASSES}"

    def enroll(self, client: Client, items: list[int]) -> None:
        client.enroll(GALLERY, [self.label(i) for i in items], [POOL[i] for i in items],
                      ids=[f"i{i}" for i in items])
        for i in items:
            self.live[i] = self.label(i)

    def delete(self, client: Client, items: list[int]) -> None:
        if items:
            client.delete(GALLERY, client_ids=[f"i{i}" for i in items])
        for i in items:
            self.live.pop(i, None)

    def step(self, client: Client) -> None:
        r = self.rng.random()
        if r < 0.6 or len(self.live) < 3000:
            items = list(range(self.next_item, self.next_item + int(self.rng.integers(20, 120))))
            self.next_item += len(items)
            self.pending = ("enroll", items)
            self.enroll(client, items)
        elif r < 0.95:
            alive = np.array(sorted(self.live))
            items = self.rng.choice(alive, size=min(len(alive), int(self.rng.integers(20, 300))), replace=False)
            self.pending = ("delete", [int(i) for i in items])
            self.delete(client, self.pending[1])
        else:  # a whole class, as the items of that label the driver knows to be live
            label = self.label(int(self.rng.integers(CLASSES)))
            items = [i for i, lb in self.live.items() if lb == label]
            self.pending = ("delete", items)
            self.delete(client, items)
        self.pending = None

    def redo(self, client: Client) -> None:
        if self.pending is not None:
            kind, items = self.pending
            (self.enroll if kind == "enroll" else self.delete)(client, items)
            self.pending = None


def check_against_scratch(client: Client, driver: Driver, folder, model_file, probes) -> None:
    assert client.get_gallery(GALLERY).item_count == len(driver.live)
    counts: dict[str, int] = {}
    for lb in driver.live.values():
        counts[lb] = counts.get(lb, 0) + 1
    assert {x.label: x.count for x in client.classes(GALLERY)} == counts
    with LocalClient(folder, model=model_file) as fresh:
        fresh.create_gallery(GALLERY)
        items = sorted(driver.live)
        for s in range(0, len(items), 1000):
            part = items[s:s + 1000]
            fresh.enroll(GALLERY, [driver.live[i] for i in part], [POOL[i] for i in part], ids=[f"i{i}" for i in part])
        expected = fresh.identify(GALLERY, list(probes), k=5)
    got = client.identify(GALLERY, list(probes), k=5)
    assert_same_candidates(got, expected)


@pytest.mark.slow
def test_sigkill_during_enrollments_and_deletions(tmp_path, model_file):
    rng = np.random.default_rng(99)
    probes = unit_vectors(12, seed=8)
    data = tmp_path / "data"
    driver = Driver(rng)
    server = start_server(data, model_file)
    with Client(server.address, timeout=TIMEOUT, retries=0) as client:
        client.create_gallery(GALLERY)
        for _ in range(20):
            driver.step(client)
    assert server.stop() == 0  # a snapshot that every later start finds stale
    server = start_server(data, model_file)
    try:
        for r in range(ROUNDS):
            killer = threading.Timer(float(rng.uniform(0.2, 1.5)), server.kill)
            killer.start()
            with Client(server.address, timeout=TIMEOUT, retries=0) as client:
                try:
                    while True:
                        driver.step(client)
                except TwinsearchError:
                    pass  # the kill: the call in flight stays pending
            killer.join()
            assert not server.alive()
            server = start_server(data, model_file)
            with Client(server.address, timeout=TIMEOUT) as client:
                driver.redo(client)
                check_against_scratch(client, driver, tmp_path / f"scratch-{r}", model_file, probes)
    finally:
        if server.alive():
            server.stop()
    print(f"\ncrash with deletions: {ROUNDS} SIGKILL rounds survived, {driver.next_item} items enrolled, "
          f"{len(driver.live)} live at the end")
