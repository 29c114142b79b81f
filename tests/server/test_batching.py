"""The batcher on its own, and the engine gathering concurrent calls into one encoder pass or search."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from twinsearch.client.errors import DeadlineExceeded, InvalidArgument, Unavailable
from twinsearch.server.batching import Batcher, wait_for
from twinsearch.server.deadlines import Deadline, call_scope
from twinsearch.server.engine import Engine, EnrollItem
from twinsearch.server.settings import EngineSettings

from .conftest import glyph, png


class Recorder:
    """run(key, parts) that records each gathered run, failing on parts == 'bad'. The first run sets
    `started` and then waits for `release`, so that a test can queue parts behind it (events, no sleeps)."""

    def __init__(self):
        self.runs: list[tuple[object, list]] = []
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, key, parts):
        with self.lock:
            self.runs.append((key, list(parts)))
            first = len(self.runs) == 1
        if first:
            self.started.set()
            assert self.release.wait(10), "the test never released the first run"
        if "bad" in parts:
            raise InvalidArgument("bad part")
        return [f"{key}:{p}" for p in parts]

    def hold_first(self, batcher: Batcher, key, part, size: int = 1):
        """Submit the part that runs first and wait until it runs (and blocks): later parts queue."""
        future = batcher.submit(key, part, size)
        assert self.started.wait(10)
        return future


def test_gathers_parts_with_the_same_key():
    run = Recorder()
    batcher = Batcher("t", run, max_size=100, wait_s=0.01)
    try:
        first = run.hold_first(batcher, "a", "p0")
        futures = [batcher.submit("a", f"p{i}", 1) for i in range(1, 6)] + [batcher.submit("b", "q", 1)]
        run.release.set()
        results = [f.result(timeout=5) for f in [first, *futures]]
    finally:
        batcher.close()
    assert results == ["a:p0", "a:p1", "a:p2", "a:p3", "a:p4", "a:p5", "b:q"]
    assert [parts for _, parts in run.runs] == [["p0"], ["p1", "p2", "p3", "p4", "p5"], ["q"]]


def test_a_lone_part_on_an_idle_batcher_runs_at_once():
    """A quiet server pays no batching delay: the window (here 30 s) only applies while a worker is busy."""
    run = Recorder()
    run.release.set()
    batcher = Batcher("t", run, max_size=100, wait_s=30.0)
    try:
        assert batcher.submit("a", "p0", 1).result(timeout=5) == "a:p0"
        assert batcher.submit("a", "p1", 1).result(timeout=5) == "a:p1"  # idle again after the first run
    finally:
        batcher.close()
    assert [parts for _, parts in run.runs] == [["p0"], ["p1"]]


def test_call_on_an_idle_batcher_runs_on_the_calling_thread():
    """`call` on a quiet batcher runs the part where it is called (no hand-over to the worker and back);
    parts that come meanwhile queue, and the worker gathers them once that run is over."""
    threads: list[str] = []
    run = Recorder()
    hooked: list[str] = []

    def recording(key, parts):
        threads.append(threading.current_thread().name)
        return run(key, parts)

    batcher = Batcher("t", recording, max_size=100, wait_s=0.0,
                      on_start=lambda: hooked.append(threading.current_thread().name))
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="caller") as pool:
            first = pool.submit(batcher.call, "k", "p0", 1)
            assert run.started.wait(10)  # the caller's own run, held
            later = [batcher.submit("k", f"p{i}", 1) for i in range(1, 4)]
            run.release.set()
            assert first.result(timeout=10) == "k:p0"
            assert [f.result(timeout=10) for f in later] == ["k:p1", "k:p2", "k:p3"]
            assert pool.submit(batcher.call, "k", "p4", 1).result(timeout=10) == "k:p4"  # idle again
    finally:
        batcher.close()
    assert [parts for _, parts in run.runs] == [["p0"], ["p1", "p2", "p3"], ["p4"]]
    assert threads[0].startswith("caller") and threads[1].startswith("twinsearch-t") and threads[2] == threads[0]
    assert sorted(hooked) == sorted({threads[0], threads[1]})  # once in each thread that ran parts


def test_call_on_a_busy_batcher_waits_for_the_worker():
    run = Recorder()
    batcher = Batcher("t", run, max_size=100, wait_s=0.0)
    try:
        blocker = run.hold_first(batcher, "k", "x")  # the worker is busy
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(batcher.call, "k", p, 1) for p in ("a", "bad")]
            deadline = Deadline.after(0.05)
            with pytest.raises(DeadlineExceeded):
                batcher.call("k", "late", 1, deadline)
            run.release.set()
            assert blocker.result(timeout=5) == "k:x" and calls[0].result(timeout=5) == "k:a"
            with pytest.raises(InvalidArgument):
                calls[1].result(timeout=5)
        with pytest.raises(InvalidArgument):  # an error on the caller's own run is the caller's
            batcher.call("k", "bad", 1)
        with pytest.raises(DeadlineExceeded):  # so is a deadline already past
            batcher.call("k", "p", 1, Deadline.after(-1.0))
    finally:
        batcher.close()
    with pytest.raises(Unavailable):
        batcher.call("k", "p", 1)
    assert "late" not in [p for _, parts in run.runs for p in parts] and ["p"] not in [r[1] for r in run.runs]


def test_max_size_splits_batches():
    run = Recorder()
    batcher = Batcher("t", run, max_size=4, wait_s=0.0)
    try:
        blocker = run.hold_first(batcher, "k", "x")
        futures = [batcher.submit("k", f"p{i}", 2) for i in range(4)]
        run.release.set()
        for f in [blocker, *futures]:
            f.result(timeout=5)
    finally:
        batcher.close()
    assert [len(parts) for _, parts in run.runs] == [1, 2, 2]


def test_an_error_goes_to_the_part_that_caused_it():
    run = Recorder()
    batcher = Batcher("t", run, max_size=100, wait_s=0.01)
    try:
        blocker = run.hold_first(batcher, "k", "x")
        good, bad, other = (batcher.submit("k", p, 1) for p in ("ok", "bad", "fine"))
        run.release.set()
        assert blocker.result(timeout=5) == "k:x"
        assert good.result(timeout=5) == "k:ok" and other.result(timeout=5) == "k:fine"
        with pytest.raises(InvalidArgument):
            bad.result(timeout=5)
    finally:
        batcher.close()
    # gathered once, then each part alone to find the one that failed
    assert [parts for _, parts in run.runs] == [["x"], ["ok", "bad", "fine"], ["ok"], ["bad"], ["fine"]]


def test_regather_waits_for_the_callers_of_the_last_run():
    """Back from a run of 4 parts with 1 waiting, a worker with `regather` waits (up to that fraction of
    the run's time) for the other callers to come back, and runs the 4 together; without it the lone
    part runs alone. The wait is bounded: when nobody comes it runs what it has."""
    def scenario(regather: float, late: int) -> list[list]:
        run = Recorder()
        slow = threading.Event()

        def timed(key, parts):
            out = run(key, parts)
            if "p1" in parts:  # the run of 4 lasts 0.5 s, while q1 arrives
                slow.set()
                threading.Event().wait(0.5)
            return out

        batcher = Batcher("t", timed, max_size=100, wait_s=0.0, regather=regather)
        try:
            first = run.hold_first(batcher, "k", "x")
            ps = [batcher.submit("k", f"p{i}", 1) for i in range(1, 5)]
            run.release.set()
            assert slow.wait(10)
            q1 = batcher.submit("k", "q1", 1)
            ps[0].result(timeout=10)  # the run of 4 is over: its callers come back, 0.1 s later
            threading.Event().wait(0.1)
            rest = [batcher.submit("k", f"q{i}", 1) for i in range(2, 2 + late)]
            for f in [first, *ps, q1, *rest]:
                f.result(timeout=10)
        finally:
            batcher.close()
        return [parts for _, parts in run.runs]

    assert scenario(1.0, 3) == [["x"], ["p1", "p2", "p3", "p4"], ["q1", "q2", "q3", "q4"]]
    assert scenario(0.0, 3)[2] == ["q1"]  # without it the straggler runs alone
    assert scenario(1.0, 0) == [["x"], ["p1", "p2", "p3", "p4"], ["q1"]]  # nobody else came: it ran anyway


def test_work_of_an_expired_call_is_skipped():
    run = Recorder()
    batcher = Batcher("t", run, max_size=100, wait_s=0.0)
    try:
        blocker = run.hold_first(batcher, "k", "x")
        deadline = Deadline.after(0.05)
        late = batcher.submit("k", "late", 1, deadline)
        with pytest.raises(DeadlineExceeded):
            wait_for(late, deadline)
        run.release.set()
        assert blocker.result(timeout=5) == "k:x"
    finally:
        batcher.close()  # runs (or drops) what is queued before the workers stop
    assert [parts for _, parts in run.runs] == [["x"]]


class Submissions:
    """Wraps `batcher.submit`: the futures it handed out, and `all_queued`, set once `expected` parts
    were queued (a call that finds the batcher idle runs on its own thread and is not queued)."""

    def __init__(self, batcher: Batcher, expected: int):
        self.futures: list = []
        self.all_queued = threading.Event()
        self._lock = threading.Lock()
        submit = batcher.submit

        def counting_submit(*args, **kwargs):
            future = submit(*args, **kwargs)
            with self._lock:
                self.futures.append(future)
                if len(self.futures) >= expected:
                    self.all_queued.set()
            return future

        batcher.submit = counting_submit


class GatedModel:
    """The real model, recording the batch sizes it ran. Each forward pass sets `entered`, then waits
    for `gate` when there is one: a test holds a pass while other calls queue up behind it."""

    def __init__(self, model):
        self._model = model
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.gate: threading.Event | None = None

    def __getattr__(self, name):
        return getattr(self._model, name)

    def embed_arrays(self, batch):
        self.batches.append(len(batch))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        return self._model.embed_arrays(batch)


@pytest.fixture
def gated_engine(tmp_path, model_path):
    engine = Engine.open(tmp_path, model_path, EngineSettings(torch_threads=1, batch_wait_ms=5))
    engine.model = GatedModel(engine.model)
    yield engine
    engine.close()


def test_concurrent_calls_share_encoder_passes(gated_engine):
    images = [png(glyph(i)) for i in range(12)]
    # The first call finds the encoder idle and runs on its own thread; its pass holds until the other 11
    # are queued behind it, and they go in one more.
    gated_engine.model.gate = Submissions(gated_engine._encoder, 11).all_queued
    with ThreadPoolExecutor(12) as pool:
        vectors = list(pool.map(lambda im: gated_engine.embed([im])[0], images))
    assert gated_engine.model.batches == [1, 11]
    alone = gated_engine.embed(images)
    np.testing.assert_allclose(np.stack(vectors), alone, atol=1e-5)  # gathering changes no answer


def test_concurrent_identifies_share_gallery_searches(gated_engine):
    gated_engine.create_gallery("g")
    gated_engine.enroll("g", [EnrollItem(f"c{i}", png(glyph(i))) for i in range(10)])
    vectors = gated_engine.embed([png(glyph(i)) for i in range(10)])
    seen: list[tuple[str, int, int]] = []
    gated_engine.observer = lambda stage, calls, rows: seen.append((stage, calls, rows))
    store = gated_engine.store
    real = store.identify
    all_queued = Submissions(gated_engine._searcher, 9).all_queued  # the first runs at once, on its thread

    def gated_identify(*args, **kw):
        assert all_queued.wait(10)  # no search ends before every call is queued
        return real(*args, **kw)

    store.identify = gated_identify
    try:
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda v: gated_engine.identify("g", [v], k=2)[0], vectors))
    finally:
        del store.identify
    assert [a.label for a in answers] == [f"c{i}" for i in range(10)]
    searches = [s for s in seen if s[0] == "identify"]
    assert sum(rows for _, _, rows in searches) == 10
    # The first call searched alone on its own thread, held until the other 9 were queued behind it;
    # they go in one more search.
    assert [calls for _, calls, _ in searches] == [1, 9], searches


def test_engine_stops_work_past_the_deadline(gated_engine):
    with call_scope(Deadline.after(-1.0)):
        with pytest.raises(DeadlineExceeded):
            gated_engine.embed([png(glyph(0))])
    assert gated_engine.model.batches == []
