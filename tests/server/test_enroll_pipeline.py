"""`_Ahead`: an enroll stream's next batch prepared while the one before is stored, in order."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from twinsearch.server.service import _Ahead

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="none")


def test_results_come_in_order_and_the_next_is_prepared_meanwhile():
    started: dict[int, float] = {}
    consumed: dict[int, float] = {}

    def prepare(i: int) -> int:
        started[i] = time.monotonic()
        return i * 10

    ahead = _Ahead(iter(range(5)), prepare)
    out = []
    for value in ahead:
        out.append(value)
        time.sleep(0.05)  # storing the batch
        consumed[value // 10] = time.monotonic()
    assert out == [0, 10, 20, 30, 40]
    # Batch i + 1 was prepared while batch i was being stored, not after.
    assert all(started[i + 1] < consumed[i] for i in range(4))


def test_a_failure_is_raised_in_its_place_and_nothing_after_it_is_prepared():
    prepared = []

    def prepare(i: int) -> int:
        prepared.append(i)
        if i == 2:
            raise ValueError("batch 2 is bad")
        return i

    got = []
    with pytest.raises(ValueError, match="batch 2 is bad"):
        for value in _Ahead(iter(range(6)), prepare):
            got.append(value)
    assert got == [0, 1]
    time.sleep(0.05)
    assert prepared == [0, 1, 2]


def test_a_broken_request_stream_is_raised():
    def requests():
        yield 1
        raise ConnectionError("the call was cancelled")

    got = []
    with pytest.raises(ConnectionError):
        for value in _Ahead(requests(), lambda i: i):
            got.append(value)
    assert got == [1]


def test_preparing_runs_in_the_stream_context_and_stops_when_closed():
    seen = []
    release = threading.Event()

    def requests():
        yield 1
        release.wait(5)
        yield 2
        yield 3

    def prepare(i: int) -> int:
        seen.append(marker.get())
        return i

    token = marker.set("stream")
    try:
        ahead = _Ahead(requests(), prepare)
    finally:
        marker.reset(token)
    first = next(iter(ahead))
    ahead.close()
    release.set()
    time.sleep(0.3)
    assert first == 1 and seen and set(seen) == {"stream"}
    assert len(seen) <= 2  # at most the request read before close was seen is prepared


def test_stages_run_for_different_batches_at_once():
    """With (decode, embed) stages, batch k + 1 is embedded and k + 2 decoded while k is stored."""
    decoded: dict[int, float] = {}
    embedded: dict[int, float] = {}
    stored: dict[int, float] = {}

    def decode(i: int) -> int:
        decoded[i] = time.monotonic()
        return i

    def embed(i: int) -> int:
        embedded[i] = time.monotonic()
        time.sleep(0.05)  # the forward pass
        return i * 10

    ahead = _Ahead(iter(range(6)), decode, embed)
    out = []
    for value in ahead:
        time.sleep(0.05)  # storing the batch
        stored[value // 10] = time.monotonic()
        out.append(value)
    assert out == [0, 10, 20, 30, 40, 50]
    assert all(embedded[i + 1] < stored[i] for i in range(5))
    # Decoding ran ahead of the forward pass, not between its batches.
    assert all(decoded[i + 1] < embedded[i] + 0.05 for i in range(5))


def test_a_failing_first_stage_stops_the_later_ones_in_order():
    embedded = []

    def decode(i: int) -> int:
        if i == 3:
            raise ValueError("batch 3 does not decode")
        return i

    def embed(i: int) -> int:
        embedded.append(i)
        return i

    got = []
    with pytest.raises(ValueError, match="batch 3 does not decode"):
        for value in _Ahead(iter(range(8)), decode, embed):
            got.append(value)
    time.sleep(0.05)
    assert got == [0, 1, 2] and embedded == [0, 1, 2]


def test_closing_stops_every_stage_thread():
    release = threading.Event()

    def requests():
        yield 1
        release.wait(5)
        yield 2

    ahead = _Ahead(requests(), lambda i: i, lambda i: i)
    assert next(iter(ahead)) == 1
    ahead.close()
    release.set()
    for thread in ahead._threads:
        thread.join(2)
    assert not any(thread.is_alive() for thread in ahead._threads)
