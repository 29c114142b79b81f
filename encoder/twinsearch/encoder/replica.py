"""One encoder replica: a model loaded from the bytes of its file, embedding preprocessed batches.

The same class is the unit of work of both distributed paths, and imports no Ray itself:

- the bulk pipeline (`twinsearch embed`) hands it to Ray Data as the callable class of an actor pool:
  `__call__` takes a batch of rows ({"image": (n, C, H, W) float32, ...}) and adds a "vector" column;
- the server's remote encoding (`twinsearch serve --encoders ray`) wraps it with `ray.remote` and
  calls `embed_arrays` on the batches its encoder batcher gathered.

The model travels as the bytes of its file (a few MB), so that a replica on another node needs no
shared file system to load it; the server's replicas on its own node take the file's path instead (an
argument of a few MB goes through the object store, and Ray warns at every start that a restarted actor
might not find it there). The replica checks that what it loaded has the fingerprint the caller
expects. On a node with a GPU the model runs there (`device=None`: CUDA when present).
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

log = logging.getLogger(__name__)


class EncoderReplica:
    """A model in one process. `model_file`: the bytes of a model file, or its path (a str) on this
    node; `fingerprint`: the one the caller expects (ModelFileError otherwise); `threads`: torch's
    intra-op threads (0: leave torch's)."""

    def __init__(self, model_file: bytes | str, fingerprint: str, threads: int = 0, device: str | None = None):
        import torch

        from .errors import ModelFileError
        from .model import load_model

        if threads > 0:
            torch.set_num_threads(int(threads))
        if isinstance(model_file, str):
            self.model = load_model(model_file, device=device)
        else:  # load_model reads a path: the bytes go through a private temporary file, removed at once
            fd, path = tempfile.mkstemp(suffix=".tsm")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(model_file)
                self.model = load_model(path, device=device)
            finally:
                os.unlink(path)
        if self.model.fingerprint != fingerprint:
            raise ModelFileError(f"replica loaded model {self.model.fingerprint}, expected {fingerprint}")
        log.info("encoder replica %d: model %s (%s) on %s, %d torch threads", os.getpid(), self.model.name,
                 self.model.fingerprint, self.model.device, torch.get_num_threads())

    def embed_arrays(self, images: np.ndarray) -> np.ndarray:
        """(n, C, H, W) float32 preprocessed images -> (n, dim) float32 L2-normalised rows."""
        return self.model.embed_arrays(images)

    def __call__(self, batch: dict) -> dict:
        """A Ray Data batch (dict of numpy columns) with its "image" column replaced by "vector"."""
        images = batch.pop("image")
        batch["vector"] = self.embed_arrays(np.asarray(images, dtype=np.float32))
        return batch

    def pid(self) -> int:
        """The process id of the replica (to tell replicas apart in logs and tests)."""
        return os.getpid()
