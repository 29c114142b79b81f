"""Joining a Ray cluster, or starting a local Ray instance for the length of one job.

    with ray_session(RaySettings(address=None, num_cpus=2, object_store_mb=200)):
        ...   # ray.data and ray.remote work here

With an address, the session joins that cluster and leaves it running afterwards; without one, it
starts a local instance (no dashboard; as many logical CPUs as the machine has cores, or as asked) and
shuts it down at the end. A process already connected to Ray (a test, a notebook) keeps its
connection: the session neither starts nor stops anything then.

An address that nothing answers fails at once with `RayUnavailable` (one line naming the address),
rather than after Ray's own connection timeout of a minute or more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

RAY_EXTRA = "twinsearch[ray]"
CONNECT_TIMEOUT_S = 3.0
# Ray logs here, at WARNING, that a new local instance has token authentication on (its default, which
# stays on). RAY_AUTH_MODE=token would name that default and end the notice, but Ray reads it once per
# process, before a library could set it; so the notice is muted while a local instance starts.
AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


class RayMissing(RuntimeError):
    """Ray (with its data extra) is not installed."""

    def __init__(self, what: str = "ray"):
        super().__init__(f"this needs {what}, which is not installed; install the Ray extra: "
                         f"pip install '{RAY_EXTRA}'")


class RayUnavailable(RuntimeError):
    """The cluster named by an address cannot be reached."""


@dataclass(frozen=True)
class RaySettings:
    """address: HOST:PORT of a cluster's head (its GCS), "auto", or a "ray://" client address; None
    starts a local instance. num_cpus / object_store_mb: the local instance's logical CPUs (None: the
    machine's cores) and object store size in MiB (None: Ray's default, a share of the memory)."""

    address: str | None = None
    num_cpus: int | None = None
    object_store_mb: int | None = None

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"num_cpus must be at least 1, got {self.num_cpus}")
        if self.object_store_mb is not None and self.object_store_mb < 75:
            raise ValueError(f"the object store needs at least 75 MiB, got {self.object_store_mb}")


def require_ray(data: bool = False):
    """Import and return `ray` (and check `ray.data` with `data`); RayMissing when not installed."""
    try:
        import ray
    except ImportError:
        raise RayMissing("ray") from None
    if data:
        try:
            import pyarrow  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError:
            raise RayMissing("ray[data]") from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """RayUnavailable unless something accepts TCP connections at HOST:PORT. "auto" and "ray://"
    addresses are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayUnavailable(f"Ray address must be HOST:PORT, 'auto' or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def connect(settings: RaySettings) -> bool:
    """Connect this process to Ray as `settings` say, unless it is connected already. True when this
    call connected it (the caller then calls `ray.shutdown()` when done), False when it already was."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if settings.address is not None:
        check_reachable(settings.address)
        try:
            ray.init(address=settings.address, **quiet)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise RayUnavailable(f"cannot join the Ray cluster at {settings.address}: {exc}") from None
        log.info("joined the Ray cluster at %s: %s", settings.address, ray.cluster_resources())
    else:
        num_cpus = settings.num_cpus or os.cpu_count() or 1
        store = None if settings.object_store_mb is None else settings.object_store_mb * 1024 * 1024
        # "local": a new instance even where RAY_ADDRESS names a cluster (Ray would join that one).
        with _muted(AUTH_NOTICE_LOGGER), _interrupt_held() as held:
            ray.init(address="local", num_cpus=num_cpus, object_store_memory=store, **quiet)
        if held:  # Ctrl-C came while the instance started: stop it whole, then let the interrupt through
            _deliver(held[0], ray)
        log.info("started a local Ray instance: %d CPUs", num_cpus)
    return True


@contextlib.contextmanager
def _interrupt_held() -> Iterator[list[int]]:
    """Hold SIGINT for the `with` block (yields the list it is put in), where the main thread can.

    A KeyboardInterrupt raised inside `ray.init` leaves the processes it had started without a Ray
    instance to stop them (its dashboard and runtime-env agents stayed for a minute and more); started,
    `ray.shutdown()` stops them all. A second Ctrl-C is not held; an ignored SIGINT (a background job)
    stays ignored, as training leaves it (`trainer._stop_requests`)."""
    held: list[int] = []

    def hold(signum, _frame):
        if held:
            raise KeyboardInterrupt
        held.append(signum)

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield held  # elsewhere signals do not arrive
        return
    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)


def _deliver(signum: int, ray) -> None:
    """Raise the held signal again for its own handler (a KeyboardInterrupt, or what `serve` does with it),
    stopping Ray first when that handler ends the process or raises."""
    if signal.getsignal(signum) in (signal.SIG_DFL, None):
        ray.shutdown()
    try:
        signal.raise_signal(signum)
    except BaseException:
        ray.shutdown()
        raise


@contextlib.contextmanager
def _muted(logger_name: str) -> Iterator[None]:
    """Only errors from `logger_name` for the `with` block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def ray_session(settings: RaySettings) -> Iterator[object]:
    """Ray connected for the `with` block (see the module docstring); yields the `ray` module."""
    ray = require_ray()
    started = connect(settings)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def on_this_node(ray) -> bool:
    """Whether the connected cluster is this process's own node alone (a local instance, or a cluster of
    one node joined from it): then its workers see this machine's files and cores."""
    alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    return alive == [ray.get_runtime_context().get_node_id()]


def cluster_gpus(ray) -> int:
    """How many GPUs the connected cluster has (0 on a CPU-only cluster)."""
    return int(ray.cluster_resources().get("GPU", 0))
