"""Dynamic batching: concurrent calls gathered into one encoder pass or one gallery search.

A `Batcher` owns worker threads. Callers `submit(key, part, size)` and wait on the returned future,
or `call(key, part, size, deadline)` for the result. A worker takes the oldest waiting part and calls
`run(key, parts)` once for it and every other waiting part with the same key (up to `max_size` rows). A
worker that was idle when the part came runs it at once: a lone call on a quiet server pays no batching
delay. `call` on an idle batcher of one worker goes further and runs the part on the calling thread, as
the worker would have, without handing it to the worker and back (two thread switches a stage, which
on 2 cores made a lone Verify or Identify a few percent slower: docs/performance.md); parts that come
meanwhile queue for the worker, which gathers them as it would behind a run of its own. A worker that
comes back from a run to find parts waiting (the server is busy) first lets the oldest of them wait up
to `wait_s` since it was queued, for company. With `regather`, a worker that comes back from a run to find fewer parts waiting than the
larger of its last two runs held also waits, up to that fraction of the run's duration, for the callers
of the run to come back: for runs that cost about as much for few parts as for many (a scan of a large
flat index), two runs of 30 and 2 parts are slower than one of 32. `run` returns one result per part, in
order. If a gathered run raises and it held more than one part, each part is run again on its own, so an
error is reported to the call that caused it and to no other.

Parts whose caller has gone (deadline passed, call cancelled) are dropped before they run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from twinsearch.client.errors import Unavailable

from .deadlines import Deadline

log = logging.getLogger(__name__)

RunFn = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


@dataclass
class _Entry:
    key: Hashable
    part: Any
    size: int
    deadline: Deadline
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


class Batcher:
    """Gathers parts with equal keys into one call of `run`.

    name: for logs and thread names. max_size: rows per gathered run (a single larger part still runs,
    alone). wait_s: how long the oldest part waits for company when the worker is busy (a part that
    finds a worker idle runs at once). threads: worker threads.
    on_start: called once in each worker thread before it serves (e.g. to set torch's thread count).
    observe: called with (key, parts, rows) before each run (metrics).
    timer: called with (stage, seconds) for each part's time in the queue (stage "<name>_queue") and
    each run's time (stage "<name>_run"), for the per-stage latency breakdown.
    regather: see the module's docstring (0: off).
    """

    def __init__(
        self,
        name: str,
        run: RunFn,
        *,
        max_size: int,
        wait_s: float,
        threads: int = 1,
        on_start: Callable[[], None] | None = None,
        observe: Callable[[Hashable, int, int], None] | None = None,
        timer: Callable[[str, float], None] | None = None,
        regather: float = 0.0,
    ):
        self.name = name
        self._run = run
        self._max_size = max(1, int(max_size))
        self._wait_s = max(0.0, float(wait_s))
        self._on_start = on_start
        self._observe = observe
        self._timer = timer
        self._regather = max(0.0, float(regather))
        self._runs: deque[tuple[int, float, float]] = deque(maxlen=2)  # (rows, ended, seconds) of recent runs
        self._queue: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._closed = False
        # Runs in progress: by the workers, and by callers on their own threads (`call`, one worker only).
        self._working = 0
        self._inline = 0
        self._started = threading.local()  # whether `on_start` ran in a calling thread that ran a part
        self._threads = [
            threading.Thread(target=self._serve, name=f"twinsearch-{name}-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ callers
    def submit(self, key: Hashable, part: Any, size: int, deadline: Deadline | None = None) -> Future:
        """Queue `part` (of `size` rows) under `key`; the future gives its result or raises its error."""
        entry = _Entry(key, part, max(1, int(size)), deadline or Deadline())
        with self._cond:
            if self._closed:
                raise Unavailable(f"the {self.name} batcher is shut down")
            self._queue.append(entry)
            self._cond.notify()
        return entry.future

    def call(self, key: Hashable, part: Any, size: int, deadline: Deadline | None = None) -> Any:
        """The result of `part` (of `size` rows) under `key`, or its error; DeadlineExceeded or Cancelled
        when the call's deadline passes or its caller cancels first (see `wait_for`).

        On an idle batcher of one worker (nothing queued, nothing running) the part runs at once on the
        calling thread; otherwise it is queued (`submit`) and waited for."""
        deadline = deadline or Deadline()
        with self._cond:
            if self._closed:
                raise Unavailable(f"the {self.name} batcher is shut down")
            inline = len(self._threads) == 1 and not self._queue and not self._working and not self._inline
            if inline:
                self._inline += 1
        if not inline:
            return wait_for(self.submit(key, part, size, deadline), deadline)
        entry = _Entry(key, part, max(1, int(size)), deadline)
        try:
            if not getattr(self._started, "done", False):
                self._started.done = True
                self._start_hook()
            self._execute([entry])
        finally:
            with self._cond:
                self._inline -= 1
                self._cond.notify_all()
        return entry.future.result()

    def close(self, timeout: float | None = 10.0) -> None:
        """Run what is queued, then stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    # ------------------------------------------------------------------ workers
    def _start_hook(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception:  # noqa: BLE001 - a tuning failure must not stop the worker
                log.exception("%s batcher: start-up hook failed", self.name)

    def _serve(self) -> None:
        self._start_hook()
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    self._working -= 1

    def _take(self) -> list[_Entry] | None:
        """The next run's parts ([] for none), counted in `_working` until the caller ends it; None when
        closed and drained."""
        with self._cond:
            idle = not self._queue
            # Parts queued behind a caller's own run (`call`) wait for it, as behind a run of this worker's.
            while not self._queue or self._inline:
                if self._closed and not self._queue:
                    return None
                idle = idle and not self._inline
                self._cond.wait()
            key = self._queue[0].key
            # Idle: the call came to a quiet server and runs now. Busy: gather until the oldest part has
            # waited wait_s (under load it usually has, while the previous run went on).
            until = time.monotonic() if idle else self._queue[0].queued_at + self._wait_s
            while not self._closed and self._rows(key) < self._max_size:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if not idle and self._regather > 0 and self._runs:
                # Back from a run with few parts waiting: wait a little for that run's callers.
                _, ended, seconds = self._runs[-1]
                want = min(max(r for r, _, _ in self._runs), self._max_size)
                until = ended + self._regather * seconds
                while not self._closed and self._rows(key) < want:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            self._working += 1
            if not self._queue:  # another worker took them while this one waited
                return []
            key = self._queue[0].key
            taken: list[_Entry] = []
            rows = 0
            kept: deque[_Entry] = deque()
            while self._queue:
                entry = self._queue.popleft()
                if entry.key == key and (not taken or rows + entry.size <= self._max_size):
                    taken.append(entry)
                    rows += entry.size
                else:
                    kept.append(entry)
            self._queue = kept
            return taken

    def _rows(self, key: Hashable) -> int:
        return sum(e.size for e in self._queue if e.key == key)

    def _execute(self, batch: list[_Entry]) -> None:
        live: list[_Entry] = []
        for entry in batch:
            if not entry.future.set_running_or_notify_cancel():
                continue  # the caller gave up and cancelled it
            try:
                entry.deadline.check(f"{self.name}")
            except Exception as exc:  # noqa: BLE001 - DeadlineExceeded or Cancelled, for that caller
                entry.future.set_exception(exc)
                continue
            live.append(entry)
        if not live:
            return
        key = live[0].key
        started = time.monotonic()
        self._time("queue", *(started - e.queued_at for e in live))
        if self._observe is not None:
            try:
                self._observe(key, len(live), sum(e.size for e in live))
            except Exception:  # noqa: BLE001 - metrics never fail a call
                log.debug("%s batcher: observer failed", self.name, exc_info=True)
        try:
            results = self._run(key, [e.part for e in live])
            ended = time.monotonic()
            with self._cond:
                self._runs.append((sum(e.size for e in live), ended, ended - started))
            self._time("run", ended - started)
            if len(results) != len(live):
                raise RuntimeError(f"{self.name}: run gave {len(results)} results for {len(live)} parts")
        except BaseException as exc:  # noqa: BLE001 - handed to the callers
            if len(live) == 1:
                live[0].future.set_exception(exc)
                return
            for entry in live:  # attribute the error to the part that caused it
                try:
                    entry.future.set_result(self._run(key, [entry.part])[0])
                except BaseException as single:  # noqa: BLE001
                    entry.future.set_exception(single)
            return
        for entry, result in zip(live, results, strict=True):
            entry.future.set_result(result)


    def _time(self, stage: str, *seconds: float) -> None:
        if self._timer is None:
            return
        try:
            for value in seconds:
                self._timer(f"{self.name}_{stage}", value)
        except Exception:  # noqa: BLE001 - metrics never fail a call
            log.debug("%s batcher: timer failed", self.name, exc_info=True)


def wait_for(future: Future, deadline: Deadline, poll_s: float = 0.25) -> Any:
    """The future's result, giving up (and cancelling the queued work) when the call's deadline passes
    or its caller cancels: raises DeadlineExceeded or Cancelled then."""
    while True:
        remaining = deadline.remaining()
        timeout = poll_s if remaining is None else max(0.0, min(poll_s, remaining))
        try:
            return future.result(timeout=timeout)
        except (TimeoutError, FutureTimeout):  # the same class from Python 3.11 on
            pass
        if not deadline.alive():
            future.cancel()
            deadline.check("the batched work finished")
