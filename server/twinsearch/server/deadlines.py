"""The deadline and liveness of the call being served, visible to the engine without a transport.

The gRPC servicer opens a `call_scope(Deadline(...))` around each call; the engine asks `current()` and
calls `check(stage)` between its stages (decode, embed, search, store), and the batchers drop work whose
caller has gone. In-process callers (LocalClient) get `NO_DEADLINE`: no limit.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from twinsearch.client.errors import Cancelled, DeadlineExceeded


@dataclass(frozen=True)
class Deadline:
    """`at`: time.monotonic() when the call expires (None: never). `active`: False once the caller
    has cancelled or gone away (None: always active)."""

    at: float | None = None
    active: Callable[[], bool] | None = None

    @classmethod
    def after(cls, seconds: float | None, active: Callable[[], bool] | None = None) -> Deadline:
        return cls(None if seconds is None else time.monotonic() + seconds, active)

    def remaining(self) -> float | None:
        """Seconds left (may be negative), or None without a deadline."""
        return None if self.at is None else self.at - time.monotonic()

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def cancelled(self) -> bool:
        return self.active is not None and not self.active()

    def alive(self) -> bool:
        return not (self.expired() or self.cancelled())

    def check(self, stage: str = "") -> None:
        """Raise DeadlineExceeded or Cancelled when the call should stop working."""
        where = f" before {stage}" if stage else ""
        if self.cancelled():
            raise Cancelled(f"the call was cancelled{where}")
        if self.expired():
            raise DeadlineExceeded(f"the call's deadline passed{where}")


NO_DEADLINE = Deadline()

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("twinsearch_deadline", default=None)


def current() -> Deadline:
    """The deadline of the call this thread is serving (no limit outside a call scope)."""
    return _current.get() or NO_DEADLINE


@contextmanager
def call_scope(deadline: Deadline) -> Iterator[Deadline]:
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)
