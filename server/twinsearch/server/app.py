"""Building, starting and stopping the gRPC server.

    running = start_server(ServerSettings(data_dir=..., address="127.0.0.1:0"))
    running.port          # the bound port (a free one for port 0)
    running.stop(grace=5.0)

Start-up loads the model and opens the store (catching up indexes) before the port opens, then the
health service reports SERVING. `stop` sets health to NOT_SERVING, refuses new calls (UNAVAILABLE),
lets calls in flight finish within the grace period, then closes the engine (index snapshots written,
store closed) and the metrics endpoint.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .auth import TokenInterceptor
from .engine import Engine
from .metrics import Metrics
from .service import SERVICE, TwinSearchServicer, add_to_server
from .settings import ServerSettings
from .startup import METRICS_FLAGS, address_error, check_address, check_tls, host_port, split_address

log = logging.getLogger(__name__)

SERVICE_NAME = SERVICE.full_name  # "twinsearch.v1.TwinSearch"


@dataclass
class RunningServer:
    """A started server. `address` is HOST:PORT as bound; `metrics_port` is None without an endpoint."""

    server: grpc.Server
    engine: Engine
    servicer: TwinSearchServicer
    health: health.HealthServicer
    metrics: Metrics
    host: str
    port: int
    metrics_port: int | None
    grace_s: float
    _stopped: threading.Event = field(default_factory=threading.Event)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literals in brackets
        return f"{host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown (see the module docstring); safe to call more than once."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.grace_s if grace is None else grace
            log.info("shutting down (grace %.1f s)", grace)
            self.health.enter_graceful_shutdown()
            self.servicer.closing = True
            self.server.stop(grace).wait()
            self.engine.close(timeout=max(grace, 1.0))
            self.metrics.stop()
            self._stopped.set()
            log.info("server stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (or `timeout` s passed); True when stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(settings: ServerSettings, *, engine: Engine | None = None, log_notes: bool = True) -> RunningServer:
    """Open the engine (unless one is given), start the gRPC server and, if asked, the metrics endpoint.
    `log_notes`: log the engine's start-up notes (galleries it cannot serve) as warnings.

    Raises `startup.StartupError` (an OSError) when the address cannot be listened on, the data
    folder cannot be used or the TLS files are not a certificate and its key, with a one-line message;
    the addresses (the metrics endpoint's too) and the TLS files are checked before the model loads.
    """
    metrics = Metrics()
    if engine is None:
        check_address(settings.address)
        if settings.tls_cert is not None:
            check_tls(settings.tls_cert, settings.tls_key)
        if settings.metrics_port is not None:
            check_address(host_port(settings.metrics_address, settings.metrics_port), METRICS_FLAGS)
        engine = Engine.open(settings.data_dir, settings.model_path, settings.engine, observer=metrics.observe_batch,
                             timer=metrics.observe_stage, models=settings.models or None, log_notes=log_notes)
    else:
        engine.observer = engine.observer or metrics.observe_batch
        engine.timer = engine.timer or metrics.observe_stage
    try:
        return _start(settings, engine, metrics)
    except BaseException:
        engine.close()
        metrics.stop()
        raise


def _start(settings: ServerSettings, engine: Engine, metrics: Metrics) -> RunningServer:
    limit = settings.max_message_bytes
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
    ]
    interceptors = [TokenInterceptor(settings.token)] if settings.token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="twinsearch-rpc"),
                         interceptors=interceptors, options=options)
    servicer = TwinSearchServicer(engine, metrics)
    add_to_server(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)

    host, _ = split_address(settings.address)
    try:
        if settings.tls_cert is not None:
            credentials = grpc.ssl_server_credentials(
                [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])
            port = server.add_secure_port(settings.address, credentials)
        else:
            port = server.add_insecure_port(settings.address)
    except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
        raise address_error(settings.address, exc) from exc
    if not port:
        raise address_error(settings.address, OSError("bind failed"))

    metrics.watch_galleries(engine.list_galleries)
    metrics_port = None
    if settings.metrics_port is not None:
        try:
            metrics_port = metrics.serve(settings.metrics_port, settings.metrics_address)
        except OSError as exc:  # taken since the check, or an address of another machine
            raise address_error(host_port(settings.metrics_address, settings.metrics_port), exc,
                                METRICS_FLAGS) from exc

    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s:%d%s%s", SERVICE_NAME, host, port, " with TLS" if settings.tls_cert else "",
             " with a token" if settings.token else "")
    return RunningServer(server=server, engine=engine, servicer=servicer, health=health_servicer, metrics=metrics,
                         host=host, port=port, metrics_port=metrics_port, grace_s=settings.grace_s)
