"""Settings of the serving layer: one frozen object per component, passed to constructors.

`EngineSettings` limits and tunes the transport-free engine; `ServerSettings` adds what only the gRPC
server needs (address, token, TLS, metrics port, message size). Nothing here reads the environment:
the `twinsearch serve` command maps flags and `TWINSEARCH_*` variables onto these objects
(`twinsearch.server.commands.serve`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Defaults, in one place so the command's --help and the dataclasses agree.
DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_MB = 64          # gRPC's own default is 4 MiB: too small for bulk batches
DEFAULT_MAX_BATCH = 1024             # items (images, pairs, probes) in one request
DEFAULT_MAX_PIXELS = 40_000_000      # width * height of one input image, before resizing
DEFAULT_MAX_K = 1000                 # k of Identify and Search
DEFAULT_BATCH_WAIT_MS = 2.0          # how long a batch waits for company before it runs
DEFAULT_ENCODER_BATCH = 256          # images in one encoder forward pass
DEFAULT_SEARCH_BATCH = 1024          # probes in one gathered gallery search
# A scan of a large exact gallery costs about as much for 2 probes as for 30: under a closed load (32
# clients, 1M x 128, 2 cores) the search batcher alternated runs of about 30 and 2 probes; waiting up to a
# quarter of a run for its callers made them runs of 32 (docs/performance.md).
DEFAULT_SEARCH_REGATHER = 0.25
DEFAULT_WORKERS = 64                 # gRPC handler threads (they mostly wait on the batchers)
DEFAULT_GRACE_S = 10.0
DEFAULT_KEEP_IMAGES = True           # new galleries keep their images: about 1 ms and 4 KiB per image (README)
DEFAULT_MIGRATION_BATCH = 8          # images a migration embeds per encoder pass (see bench/migration.py)
ENCODERS = ("local", "ray")          # where the server's images are embedded
DEFAULT_ENCODER_REPLICAS = 2         # replicas of `--encoders ray`


def _cpu_count() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class EngineSettings:
    """Limits and tuning of `twinsearch.server.engine.Engine`.

    max_batch: most items (images, pairs, probes, enroll items) in one call, else RESOURCE_EXHAUSTED.
    max_pixels: most pixels (width * height) of one input image, else RESOURCE_EXHAUSTED.
    max_k: largest k for identify and search, else INVALID_ARGUMENT.
    batch_wait_ms: how long the encoder and search batchers, when busy, wait to gather concurrent calls
        (a call that finds its batcher idle runs at once).
    encoder_batch / search_batch: most images per forward pass / probes per gathered search.
    search_regather: when the search batcher comes back from a run to fewer probes than its last runs
        held, it waits up to this fraction of the run's time for their callers (0: never; see batching).
    torch_threads: intra-op threads of the encoder (0: the number of CPUs).
    default_threshold: the model card's operating point used when nothing else gives a threshold.
    keep_images: whether a new gallery keeps its enrolled images (for migrations) unless told.
    migration_batch: images a migration embeds per encoder pass (between them, calls go first).
    store: keyword arguments for the gallery store's own settings object, if it has one.
    encoders: "local" (the model in this process) or "ray" (a pool of `encoder_replicas` replicas on the
    Ray cluster at `ray_address`; None: a local Ray instance, its object store `ray_object_store_mb`).
    """

    max_batch: int = DEFAULT_MAX_BATCH
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_k: int = DEFAULT_MAX_K
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    encoder_batch: int = DEFAULT_ENCODER_BATCH
    search_batch: int = DEFAULT_SEARCH_BATCH
    search_regather: float = DEFAULT_SEARCH_REGATHER
    torch_threads: int = 0
    default_threshold: str = "eer"
    keep_images: bool = DEFAULT_KEEP_IMAGES
    migration_batch: int = DEFAULT_MIGRATION_BATCH
    store: dict = field(default_factory=dict)
    encoders: str = "local"
    encoder_replicas: int = DEFAULT_ENCODER_REPLICAS
    ray_address: str | None = None
    ray_object_store_mb: int | None = None

    def __post_init__(self) -> None:
        if self.encoders not in ENCODERS:
            raise ValueError(f"encoders must be one of {', '.join(ENCODERS)}, got {self.encoders!r}")
        if self.encoder_replicas < 1:
            raise ValueError(f"encoder_replicas must be at least 1, got {self.encoder_replicas}")
        for name in ("max_batch", "max_pixels", "max_k", "encoder_batch", "search_batch", "migration_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.search_regather <= 1:
            raise ValueError(f"search_regather must be in [0, 1], got {self.search_regather}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads must be >= 0, got {self.torch_threads}")

    @property
    def threads(self) -> int:
        return self.torch_threads or _cpu_count()


@dataclass(frozen=True)
class ServerSettings:
    """Everything `twinsearch.server.app.start_server` needs.

    address: HOST:PORT to bind (port 0 picks a free port; see RunningServer.port).
    token: when set, every RPC but health needs `authorization: Bearer <token>` metadata.
    tls_cert / tls_key: PEM files; both or neither.
    metrics_port: serve Prometheus metrics on this port (0: a free port; None: no endpoint).
    metrics_address: the interface the metrics endpoint binds.
    """

    data_dir: Path
    model_path: Path | None = None
    # Several models: (name, or None for the card's; model file or shipped model name), the first the
    # default. When given, model_path is not used.
    models: tuple[tuple[str | None, Path], ...] = ()
    address: str = DEFAULT_ADDRESS
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    max_message_mb: int = DEFAULT_MAX_MESSAGE_MB
    workers: int = DEFAULT_WORKERS
    grace_s: float = DEFAULT_GRACE_S
    engine: EngineSettings = field(default_factory=EngineSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name in ("model_path", "tls_cert", "tls_key"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
        if self.token is not None and not self.token.strip():
            raise ValueError("the token must not be empty")
        if self.max_message_mb < 1:
            raise ValueError(f"max_message_mb must be at least 1, got {self.max_message_mb}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if ":" not in self.address:
            raise ValueError(f"address must be HOST:PORT, got {self.address!r}")

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb) * 1024 * 1024
