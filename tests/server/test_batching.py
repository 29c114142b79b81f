"""The batcher on its own, and the engine gathering concurrent calls into one encoder pass or search."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from twinsearch.client.errors import DeadlineExceeded, InvalidArgument
from twinsearch.server.batching import Batcher, wait_for
from twinsearch.server.deadlines import Deadline, call_scope
from twinsearch.server.engine import Engine, EnrollItem
from twinsearch.server.settings import EngineSettings

from .conftest import glyph, png


class Recorder:
    """run(key, parts) that records each gathered run, optionally slowly, failing on parts == 'bad'."""

    def __init__(self, delay: float = 0.0):
        self.runs: list[tuple[object, list]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, key, parts):
        with self.lock:
            self.runs.append((key, list(parts)))
        time.sleep(self.delay)
        if "bad" in parts:
            raise InvalidArgument("bad part")
        return [f"{key}:{p}" for p in parts]


def test_gathers_parts_with_the_same_key():
    run = Recorder(delay=0.2)
    batcher = Batcher("t", run, max_size=100, wait_s=0.01)
    try:
        first = batcher.submit("a", "p0", 1)
        time.sleep(0.05)  # p0 is running; the next ones queue up meanwhile
        futures = [batcher.submit("a", f"p{i}", 1) for i in range(1, 6)] + [batcher.submit("b", "q", 1)]
        results = [f.result(timeout=5) for f in [first, *futures]]
    finally:
        batcher.close()
    assert results == ["a:p0", "a:p1", "a:p2", "a:p3", "a:p4", "a:p5", "b:q"]
    assert [parts for _, parts in run.runs] == [["p0"], ["p1", "p2", "p3", "p4", "p5"], ["q"]]


def test_max_size_splits_batches():
    run = Recorder(delay=0.1)
    batcher = Batcher("t", run, max_size=4, wait_s=0.0)
    try:
        blocker = batcher.submit("k", "x", 1)
        time.sleep(0.03)
        futures = [batcher.submit("k", f"p{i}", 2) for i in range(4)]
        for f in [blocker, *futures]:
            f.result(timeout=5)
    finally:
        batcher.close()
    assert [len(parts) for _, parts in run.runs] == [1, 2, 2]


def test_an_error_goes_to_the_part_that_caused_it():
    run = Recorder(delay=0.1)
    batcher = Batcher("t", run, max_size=100, wait_s=0.01)
    try:
        blocker = batcher.submit("k", "x", 1)
        time.sleep(0.03)
        good, bad, other = (batcher.submit("k", p, 1) for p in ("ok", "bad", "fine"))
        assert blocker.result(timeout=5) == "k:x"
        assert good.result(timeout=5) == "k:ok" and other.result(timeout=5) == "k:fine"
        with pytest.raises(InvalidArgument):
            bad.result(timeout=5)
    finally:
        batcher.close()


def test_work_of_an_expired_call_is_skipped():
    run = Recorder(delay=0.3)
    batcher = Batcher("t", run, max_size=100, wait_s=0.0)
    try:
        blocker = batcher.submit("k", "x", 1)
        time.sleep(0.05)
        deadline = Deadline.after(0.05)
        late = batcher.submit("k", "late", 1, deadline)
        with pytest.raises(DeadlineExceeded):
            wait_for(late, deadline)
        blocker.result(timeout=5)
        time.sleep(0.05)
    finally:
        batcher.close()
    assert [parts for _, parts in run.runs] == [["x"]]


class SlowModel:
    """The real model, with a pause in each forward pass, recording the batch sizes it ran."""

    def __init__(self, model, delay: float):
        self._model = model
        self.delay = delay
        self.batches: list[int] = []

    def __getattr__(self, name):
        return getattr(self._model, name)

    def embed_arrays(self, batch):
        self.batches.append(len(batch))
        time.sleep(self.delay)
        return self._model.embed_arrays(batch)


@pytest.fixture
def slow_engine(tmp_path, model_path):
    engine = Engine.open(tmp_path, model_path, EngineSettings(torch_threads=1, batch_wait_ms=5))
    engine.model = SlowModel(engine.model, delay=0.25)
    yield engine
    engine.close()


def test_concurrent_calls_share_encoder_passes(slow_engine):
    images = [png(glyph(i)) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        vectors = list(pool.map(lambda im: slow_engine.embed([im])[0], images))
    assert sum(slow_engine.model.batches) == 12
    assert len(slow_engine.model.batches) <= 4, slow_engine.model.batches  # not 12 passes
    alone = slow_engine.embed(images)
    np.testing.assert_allclose(np.stack(vectors), alone, atol=1e-5)  # gathering changes no answer


def test_concurrent_identifies_share_gallery_searches(slow_engine):
    slow_engine.model.delay = 0.0
    slow_engine.create_gallery("g")
    slow_engine.enroll("g", [EnrollItem(f"c{i}", png(glyph(i))) for i in range(10)])
    vectors = slow_engine.embed([png(glyph(i)) for i in range(10)])
    seen: list[tuple[str, int, int]] = []
    slow_engine.observer = lambda stage, calls, rows: seen.append((stage, calls, rows))
    store = slow_engine.store
    real = store.identify

    def slow_identify(*args, **kw):
        time.sleep(0.2)
        return real(*args, **kw)

    store.identify = slow_identify
    try:
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda v: slow_engine.identify("g", [v], k=2)[0], vectors))
    finally:
        del store.identify
    assert [a.label for a in answers] == [f"c{i}" for i in range(10)]
    searches = [s for s in seen if s[0] == "identify"]
    assert sum(rows for _, _, rows in searches) == 10
    assert len(searches) <= 5 and max(calls for _, calls, _ in searches) > 1, searches


def test_engine_stops_work_past_the_deadline(slow_engine):
    with call_scope(Deadline.after(-1.0)):
        with pytest.raises(DeadlineExceeded):
            slow_engine.embed([png(glyph(0))])
    assert slow_engine.model.batches == []
