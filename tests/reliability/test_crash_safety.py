"""Crash safety: bulk enrollment into a server killed with SIGKILL at random moments, restarted each time.

Round after round (TWINSEARCH_CRASH_ROUNDS, default 20), an EnrollStream sends batches of labelled
vectors with client ids into a running `twinsearch serve`, and the process is killed with SIGKILL at
a random moment (0 to 0.8 s after the stream opens: before, during and between commits; in about a
third of the rounds SIGTERM comes first and SIGKILL 0 to 0.5 s later, during the graceful stop and
its snapshot writing). The server is restarted on the same data folder (its index comes from a
snapshot, stale or fresh, caught up from SQLite), and then:

- every batch is sent again with the same client ids (as a resuming client would): each batch that
  was acknowledged comes back wholly "already stored" (created = False); each batch that was not
  comes back wholly stored or wholly new, never half (nothing half-written is visible);
- the gallery then holds exactly the items sent so far, each once (item count, class counts);
- every few rounds, and at the end, identify answers for fixed probes equal those of a store built
  from scratch (a LocalClient over a new folder) from the same items.
"""

from __future__ import annotations

import signal
import threading
import time

import grpc
import numpy as np
import pytest

from twinsearch.client import Client, LocalClient
from twinsearch.client import convert as c
from twinsearch.client.server_process import ServerProcess
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc

from .conftest import assert_same_candidates, env_int, start_server, unit_vectors

ROUNDS = env_int("TWINSEARCH_CRASH_ROUNDS", 20)
BATCH = 25
MAX_BATCHES = 400    # per round, if the kill comes late
IN_FLIGHT = 4
CLASSES = 23
GALLERY = "crash"
TIMEOUT = 60.0
FIRST = 500          # items enrolled before the rounds
POOL = unit_vectors(FIRST + ROUNDS * MAX_BATCHES * BATCH, seed=11)


def item(i: int) -> tuple[str, str, np.ndarray]:
    """(client id, label, vector) of item i: the same on every call."""
    return f"item-{i}", f"class-{i % CLASSES}", POOL[i]


def request(first: int, sequence: int) -> pb.EnrollRequest:
    items = []
    for i in range(first, first + BATCH):
        cid, label, v = item(i)
        items.append(pb.EnrollItem(label=label, input=pb.Input(vector=c.vector_to_pb(v)), client_id=cid))
    return pb.EnrollRequest(gallery=GALLERY, items=items, sequence=sequence)


def stream_until_killed(server: ServerProcess, first: int, rng: np.random.Generator) -> tuple[list[int], set[int]]:
    """Stream batches from item `first` on; SIGKILL the server after a random delay. Returns the first
    item of every batch handed to gRPC and the sequences acknowledged."""
    sent: list[int] = []
    acked: set[int] = set()
    window = threading.Semaphore(IN_FLIGHT)  # as the bulk client: a few batches awaiting acknowledgement
    ended = threading.Event()

    def requests():
        for b in range(MAX_BATCHES):
            while not window.acquire(timeout=0.05):
                if ended.is_set():
                    return
            start = first + b * BATCH
            sent.append(start)
            yield request(start, b)

    delay = float(rng.uniform(0.0, 0.8))
    grace = float(rng.uniform(0.0, 0.5)) if rng.random() < 0.3 else None

    def kill() -> None:
        if grace is not None:  # a shutdown under way (snapshots being written) is cut short
            server.process.send_signal(signal.SIGTERM)
            time.sleep(grace)
        server.kill()

    with grpc.insecure_channel(server.address) as channel:
        stub = twinsearch_pb2_grpc.TwinSearchStub(channel)
        killer = threading.Timer(delay, kill)
        stream = stub.EnrollStream(requests(), timeout=TIMEOUT)
        killer.start()
        try:
            for ack in stream:
                assert len(ack.items) == BATCH and all(x.created for x in ack.items), ack
                acked.add(ack.sequence)
                window.release()
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                  grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), exc
        finally:
            ended.set()
            killer.join()
    if server.alive():  # the stream ended before the timer: kill now, mid-idle
        server.kill()
    return sent, acked


def resend_and_check(client: Client, sent: list[int], acked: set[int]) -> dict:
    """Send every batch again; acknowledged ones must be wholly stored already, the others all or nothing."""
    outcome = {"acked": 0, "committed_unacked": 0, "lost_unacked": 0}
    for b, start in enumerate(sent):
        ids, labels, vectors = zip(*(item(i) for i in range(start, start + BATCH)), strict=True)
        result = client.enroll(GALLERY, list(labels), list(vectors), ids=list(ids))
        created = [x.created for x in result.stored]
        assert len(created) == BATCH
        if b in acked:
            assert not any(created), f"batch {b} was acknowledged but {sum(created)} of its items were missing"
            outcome["acked"] += 1
        else:
            assert all(created) or not any(created), f"batch {b}: half written ({sum(created)} of {BATCH} new)"
            outcome["committed_unacked" if not any(created) else "lost_unacked"] += 1
    return outcome


def compare_with_scratch(client: Client, total: int, folder, model_file, probes: np.ndarray) -> None:
    """Identify answers and class counts of the recovered server equal those of a store built from scratch."""
    with LocalClient(folder, model=model_file) as fresh:
        fresh.create_gallery(GALLERY)
        for s in range(0, total, 1000):
            ids, labels, vectors = zip(*(item(i) for i in range(s, min(total, s + 1000))), strict=True)
            fresh.enroll(GALLERY, list(labels), list(vectors), ids=list(ids))
        expected = fresh.identify(GALLERY, list(probes), k=5)
        expected_counts = [(x.label, x.count) for x in fresh.classes(GALLERY)]
    got = client.identify(GALLERY, list(probes), k=5)
    assert [(x.label, x.count) for x in client.classes(GALLERY)] == expected_counts
    assert [g.label for g in got] == [e.label for e in expected]
    assert_same_candidates(got, expected)


@pytest.mark.slow
def test_sigkill_during_bulk_enrollment(tmp_path, model_file):
    rng = np.random.default_rng(2024)
    probes = unit_vectors(16, seed=5)
    data = tmp_path / "data"
    # A first batch and a graceful stop, so that every later start loads a stale snapshot and catches up.
    server = start_server(data, model_file)
    with Client(server.address, timeout=TIMEOUT) as client:
        client.create_gallery(GALLERY)
        ids, labels, vectors = zip(*(item(i) for i in range(FIRST)), strict=True)
        client.enroll(GALLERY, list(labels), list(vectors), ids=list(ids))
    assert server.stop() == 0
    total = FIRST
    summary = {"rounds": 0, "acked_batches": 0, "committed_unacked": 0, "lost_unacked": 0}
    server = start_server(data, model_file)
    try:
        for r in range(ROUNDS):
            sent, acked = stream_until_killed(server, total, rng)
            assert not server.alive()
            server = start_server(data, model_file)
            with Client(server.address, timeout=TIMEOUT) as client:
                outcome = resend_and_check(client, sent, acked)
                total += len(sent) * BATCH
                assert client.get_gallery(GALLERY).item_count == total  # each item exactly once
                if r % 5 == 4 or r == ROUNDS - 1:
                    compare_with_scratch(client, total, tmp_path / f"scratch-{r}", model_file, probes)
            summary["rounds"] += 1
            summary["acked_batches"] += outcome["acked"]
            summary["committed_unacked"] += outcome["committed_unacked"]
            summary["lost_unacked"] += outcome["lost_unacked"]
            time.sleep(0.01)
    finally:
        if server.alive():
            server.stop()
    # A clean restart after all that: the same answers once more.
    server = start_server(data, model_file)
    try:
        with Client(server.address, timeout=TIMEOUT) as client:
            assert client.get_gallery(GALLERY).item_count == total
            compare_with_scratch(client, total, tmp_path / "scratch-final", model_file, probes)
    finally:
        server.stop()
    print(f"\ncrash safety: {summary['rounds']} SIGKILL rounds survived, {total} items, "
          f"{summary['acked_batches']} acknowledged batches all present, {summary['committed_unacked']} "
          f"unacknowledged batches found committed whole, {summary['lost_unacked']} found absent whole")
    assert summary["acked_batches"] > 0
