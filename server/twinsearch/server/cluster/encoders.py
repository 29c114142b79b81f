"""The server's encoder on a Ray cluster: `twinsearch serve --encoders ray --encoder-replicas N`.

`RayEncoderPool` holds N `EncoderReplica` actors (the class the bulk pipeline uses; one GPU each when
the cluster has GPUs, else one CPU) loaded from the server's own model file, and has the one method the
engine's encoder batcher calls: `embed_arrays(images) -> vectors`. The engine runs one batcher thread
per replica, so up to N gathered batches are embedded at once while search and the store stay in the
server process.

Batches go to the replicas in turn. When a replica dies (its node lost, its process killed), the call
fails over to the next one; Ray restarts the dead actor meanwhile. A batch sent to a replica that Ray
is restarting waits in Ray's queue for it (Ray fails only the calls in flight when an actor dies), and
one sent to a replica that hangs waits too: a replica that has not answered within `call_timeout_s`
has the call cancelled (so that it does not run later for nothing) and the batch goes to the next one.
Only when every replica has failed the batch does the call fail, with UNAVAILABLE: a batch is answered
by a replica or not at all, so an answer is never made up.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from pathlib import Path

import numpy as np

from twinsearch.client.errors import Unavailable

from .runtime import RaySettings, RayUnavailable, cluster_gpus, connect, on_this_node, require_ray

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0   # replicas loading their model at start-up
CALL_TIMEOUT_S = 120.0    # one batch on one replica, before it goes to the next


class RayEncoderPool:
    """N encoder replicas on the connected (or started) Ray cluster; see the module docstring.

    model_path: the model file the server loaded (its bytes go to each replica on a cluster; on a local
    instance the replicas read the file); fingerprint: the
    server model's, checked by each replica. threads: torch threads per replica (0: Ray's default).
    call_timeout_s: how long one replica may take to answer a batch before it goes to the next."""

    def __init__(self, ray_settings: RaySettings, model_path: str | Path, fingerprint: str, replicas: int,
                 threads: int = 0, call_timeout_s: float = CALL_TIMEOUT_S):
        if replicas < 1:
            raise ValueError(f"encoder replicas must be at least 1, got {replicas}")
        if call_timeout_s <= 0:
            raise ValueError(f"the call time-out must be positive, got {call_timeout_s}")
        self._call_timeout_s = float(call_timeout_s)
        ray = require_ray()
        self._ray = ray
        self._started = False
        if ray_settings.address is None:  # a local instance: a CPU for each replica at least
            cores = ray_settings.num_cpus or os.cpu_count() or 1
            ray_settings = RaySettings(None, max(cores, replicas), ray_settings.object_store_mb)
        self._started = connect(ray_settings)
        try:
            from twinsearch.encoder.replica import EncoderReplica

            gpus = cluster_gpus(ray)
            remote = ray.remote(EncoderReplica).options(
                num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
                max_restarts=-1,      # a dead replica comes back ...
                max_task_retries=0)   # ... but its failed batch is retried here, on another replica
            if on_this_node(ray):  # the replicas read the file: no bytes in the object store to keep alive
                self._model_ref = str(Path(model_path).resolve())
            else:  # kept for the pool's life: a replica that Ray restarts loads its model from it again
                self._model_ref = ray.put(Path(model_path).read_bytes())
            self._actors = [remote.remote(self._model_ref, fingerprint, threads) for _ in range(replicas)]
            try:
                pids = ray.get([a.pid.remote() for a in self._actors], timeout=READY_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds here; all mean "not ready"
                raise RayUnavailable(f"encoder replicas did not start: {exc}") from None
        except BaseException:
            self.close()
            raise
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self.replicas = replicas
        log.info("%d encoder replicas ready on Ray (%s; processes %s)", replicas, f"{gpus} GPUs" if gpus else "CPU",
                 pids)

    def embed_arrays(self, images: np.ndarray) -> np.ndarray:
        """(n, C, H, W) float32 -> (n, dim) float32 on one replica; the next one when it fails or does
        not answer within the call time-out; Unavailable when all have failed."""
        from ray.exceptions import RayActorError

        with self._lock:
            first = next(self._turn)
        ref = self._ray.put(np.ascontiguousarray(images, dtype=np.float32))
        errors = []
        for attempt in range(self.replicas):
            index = (first + attempt) % self.replicas
            call = self._actors[index].embed_arrays.remote(ref)
            try:
                ready, _ = self._ray.wait([call], timeout=self._call_timeout_s)
                if ready:
                    return self._ray.get(call)
                reason = f"no answer in {self._call_timeout_s:g} s"
                # Queued behind a restart, or running on a replica that hangs: cancelled, so that it does
                # not run later for nothing (a running call is only flagged; the batch is small).
                with contextlib.suppress(Exception):
                    self._ray.cancel(call)
            except RayActorError as exc:  # died, or lost with its node
                reason = type(exc).__name__
            log.warning("encoder replica %d failed a batch of %d (%s); trying the next", index, len(images), reason)
            errors.append(reason)
        raise Unavailable(f"no encoder replica could embed the batch ({', '.join(errors)})")

    def close(self) -> None:
        """Stop the replicas; shut Ray down when this pool started it. Safe to call twice."""
        for actor in getattr(self, "_actors", []):
            with contextlib.suppress(Exception):  # an actor already gone
                self._ray.kill(actor)
        self._actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False
