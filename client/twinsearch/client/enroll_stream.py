"""Bulk enrollment over the EnrollStream RPC: flow control, an acknowledgement deadline, resumption.

`EnrollStream` sends batches (each with skip_invalid and a sequence number) with at most
`max_in_flight` awaiting acknowledgement, pulling the next batch from the caller's iterator only when
a slot is free, so files are read no faster than the server stores them. The server acknowledges each
committed batch, in order. No acknowledgement within `ack_timeout` seconds while batches are
outstanding cancels the stream (DeadlineExceeded). After UNAVAILABLE (a server restarting) a new
stream re-sends the unacknowledged batches first: their client ids make that idempotent.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from twinsearch.client import convert as c
from twinsearch.client import types as t
from twinsearch.client.errors import DeadlineExceeded, InternalError
from twinsearch.client.types import EnrollItem
from twinsearch.v1 import twinsearch_pb2 as pb

log = logging.getLogger(__name__)


def enroll_request(gallery: str, items: list[EnrollItem], *, skip_invalid: bool, sequence: int = 0) -> pb.EnrollRequest:
    return pb.EnrollRequest(
        gallery=gallery,
        items=[pb.EnrollItem(label=i.label, input=c.input_to_pb(i.payload), client_id=i.client_id or "",
                             metadata=dict(i.metadata)) for i in items],
        skip_invalid=skip_invalid,
        sequence=sequence,
    )


class EnrollStream:
    """One bulk enrollment over EnrollStream, with flow control, an ack deadline and resumption.

    Batches are pulled from `batches` only when fewer than `max_in_flight` are unacknowledged. Every
    request goes out with skip_invalid and a sequence number (in the order the batches were pulled);
    acknowledgements come back in that order and `run` yields `(items, result)` per batch. After
    UNAVAILABLE a new stream re-sends the unacknowledged batches first (client ids make that
    idempotent: callers of `_enroll_batches` set them), then goes on with the rest.
    """

    _DONE = object()

    def __init__(self, gallery: str, batches: Iterator[list[EnrollItem]], *, max_in_flight: int, ack_timeout: float,
                 open_call: Callable[[Iterator[pb.EnrollRequest]], Any],
                 retry_wait: Callable[[int, float], bool], to_error: Callable[[grpc.RpcError], Exception]):
        """`open_call(requests)` starts an EnrollStream call; `retry_wait(attempt, deadline)` waits
        before a retry and says whether to make it; `to_error` turns a failed call into the exception
        to raise. `ack_timeout`: seconds to wait for an acknowledgement while batches are outstanding."""
        self.open_call = open_call
        self.ack_timeout = float(ack_timeout)
        self.retry_wait = retry_wait
        self.to_error = to_error
        self.gallery = gallery
        self.source = iter(batches)
        self.max_in_flight = max(1, int(max_in_flight))
        self.lock = threading.Lock()          # guards the fields below
        self.source_lock = threading.Lock()   # one puller at a time; pull order = sequence order
        self.unacked: deque[tuple[int, list[EnrollItem], pb.EnrollRequest]] = deque()
        self.resend: deque[tuple[int, list[EnrollItem], pb.EnrollRequest]] = deque()
        self.next_sequence = 1
        self.exhausted = False
        self.source_error: BaseException | None = None
        self.generation = 0

    def _pull(self, generation: int) -> pb.EnrollRequest | None:
        """The next new batch as a request (registered as unacknowledged), or None when there is none
        or this stream is stale. A stale stream that already pulled hands its batch to the new one."""
        with self.source_lock:
            if self.exhausted or generation != self.generation:
                return None
            try:
                items = next(self.source)
            except StopIteration:
                self.exhausted = True
                return None
            except BaseException as exc:  # raised to the caller by run(), not lost in gRPC's thread
                self.source_error = exc
                self.exhausted = True
                return None
            with self.lock:
                sequence = self.next_sequence
                self.next_sequence += 1
                request = enroll_request(self.gallery, items, skip_invalid=True, sequence=sequence)
                self.unacked.append((sequence, items, request))
                if generation != self.generation:
                    self.resend.append((sequence, items, request))
                    return None
            return request

    def _requests(self, generation: int, slots: threading.Semaphore) -> Iterator[pb.EnrollRequest]:
        while True:
            while not slots.acquire(timeout=0.2):
                if generation != self.generation:
                    return
            with self.lock:
                if generation != self.generation:
                    return
                request = self.resend.popleft()[2] if self.resend else None
            if request is None:
                request = self._pull(generation)
                if request is None:
                    return
            yield request

    def _open(self):
        with self.lock:
            self.generation += 1
            self.resend = deque(self.unacked)
            slots = threading.Semaphore(self.max_in_flight)
            requests = self._requests(self.generation, slots)
        call = self.open_call(requests)
        acks: queue.Queue = queue.Queue()

        def read() -> None:
            try:
                for response in call:
                    acks.put(response)
                    slots.release()
                acks.put(self._DONE)
            except grpc.RpcError as exc:
                acks.put(exc)

        threading.Thread(target=read, name="twinsearch-enroll-acks", daemon=True).start()
        return call, acks

    def run(self) -> Iterator[tuple[list[EnrollItem], t.EnrollResult]]:
        call, acks = self._open()
        attempt = 0
        try:
            while True:
                try:
                    ack = acks.get(timeout=self.ack_timeout)
                except queue.Empty:
                    with self.lock:
                        waiting = bool(self.unacked)
                    if not waiting:
                        continue  # the source is slow to produce a batch (reading files): not the server's fault
                    call.cancel()
                    raise DeadlineExceeded(
                        f"enroll stream: no acknowledgement within {self.ack_timeout:g} s"
                    ) from None
                if self.source_error is not None:
                    raise self.source_error
                if ack is self._DONE:
                    with self.lock:
                        if self.unacked:
                            raise InternalError(f"enroll stream closed with {len(self.unacked)} batches unacknowledged")
                    return
                if isinstance(ack, grpc.RpcError):
                    if ack.code() == grpc.StatusCode.UNAVAILABLE and self.retry_wait(
                            attempt, time.monotonic() + self.ack_timeout):
                        log.warning("enroll stream: UNAVAILABLE (%s); reconnecting, re-sending %d batches",
                                    ack.details(), len(self.unacked))
                        attempt += 1
                        call, acks = self._open()
                        continue
                    raise self.to_error(ack) from None
                with self.lock:
                    if not self.unacked or self.unacked[0][0] != ack.sequence:
                        expected = self.unacked[0][0] if self.unacked else None
                        raise InternalError(f"enroll stream: acknowledgement {ack.sequence}, expected {expected}")
                    _, items, _ = self.unacked.popleft()
                attempt = 0
                yield items, c.enroll_result_from_pb(ack)
        finally:
            with self.lock:
                self.generation += 1  # stops the request generator of the last stream
            call.cancel()
