"""EnrollStream against a scripted stand-in for the RPC: the in-flight bound, order, the ack deadline."""

import queue
import threading
import time

import pytest

from twinsearch.client.enroll_stream import EnrollStream
from twinsearch.client.errors import DeadlineExceeded, Unavailable
from twinsearch.client.types import EnrollItem
from twinsearch.v1 import twinsearch_pb2 as pb

_END = object()


class ScriptedCall:
    """Reads requests as fast as they come and acknowledges each after `delay` seconds (never, if
    `delay` is None), in order, like the server does. Records how many were unacknowledged at most."""

    def __init__(self, requests, delay: float | None):
        self.out: queue.Queue = queue.Queue()
        self.pending: queue.Queue = queue.Queue()
        self.received = self.acked = self.most_unacked = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._read, args=(requests,), daemon=True).start()
        if delay is not None:
            threading.Thread(target=self._ack, args=(delay,), daemon=True).start()

    def _read(self, requests):
        for request in requests:
            with self.lock:
                self.received += 1
                self.most_unacked = max(self.most_unacked, self.received - self.acked)
            self.pending.put(request)
        self.pending.put(_END)

    def _ack(self, delay):
        while (request := self.pending.get()) is not _END:
            time.sleep(delay)
            with self.lock:
                self.acked += 1
            items = [pb.EnrolledItem(id=i + 1, client_id=it.client_id, label=it.label, created=True)
                     for i, it in enumerate(request.items)]
            self.out.put(pb.EnrollResponse(items=items, sequence=request.sequence))
        self.out.put(_END)

    def __iter__(self):
        while (response := self.out.get()) is not _END:
            yield response

    def cancel(self):
        self.out.put(_END)


def _batches(n: int, size: int = 2):
    for b in range(n):
        yield [EnrollItem(label=f"c{b}", payload=b"x", client_id=f"{b}/{i}") for i in range(size)]


def _stream(batches, calls, *, delay, max_in_flight=3, ack_timeout=5.0):
    def open_call(requests):
        calls.append(ScriptedCall(requests, delay))
        return calls[-1]

    return EnrollStream("g", batches, max_in_flight=max_in_flight, ack_timeout=ack_timeout, open_call=open_call,
                        retry_wait=lambda attempt, deadline: False, to_error=lambda exc: Unavailable(str(exc)))


def test_at_most_max_in_flight_unacknowledged_and_results_in_order():
    calls: list = []
    results = list(_stream(_batches(12), calls, delay=0.02, max_in_flight=3).run())
    assert [items[0].label for items, _ in results] == [f"c{b}" for b in range(12)]
    assert all(r.stored[0].client_id == items[0].client_id for items, r in results)
    assert len(calls) == 1 and calls[0].received == 12
    assert calls[0].most_unacked == 3  # the bound is reached, never passed


def test_no_acknowledgement_within_the_deadline():
    calls: list = []
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="no acknowledgement within 0.3 s"):
        list(_stream(_batches(3), calls, delay=None, ack_timeout=0.3).run())
    assert time.monotonic() - started < 2.0


def test_an_error_of_the_batch_source_reaches_the_caller():
    def broken():
        yield from _batches(2)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(_stream(broken(), [], delay=0.001).run())
