"""Turning request payloads into network inputs and vectors, with errors that name the item.

A payload is what `twinsearch.client.convert.input_from_pb` returns (and what LocalClient hands on):
encoded image bytes, a pixel array (2-D or 3-D), or an embedding (a 1-D array). `prepare` sorts a
batch into images, decoded and preprocessed by the model's own `Preprocess`, and vectors, checked
(dimension, finite, unit length) and kept as given; `Prepared.assemble` puts the embedded images back among the vectors in request order.

The encoder's image errors become domain errors here, the one place that does it:
`ImageTooLargeError` -> ResourceExhausted (the pixel limit), any other `ImageError` -> InvalidArgument.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from twinsearch.client.errors import InvalidArgument, ResourceExhausted, TwinsearchError
from twinsearch.encoder.errors import ImageError, ImageTooLargeError


def image_error(exc: ImageError, where: str) -> TwinsearchError:
    """The domain error for an encoder image error about the item at `where`."""
    if isinstance(exc, ImageTooLargeError):
        return ResourceExhausted(f"{where}: {exc}", field=where)
    return InvalidArgument(f"{where}: {exc}", field=where)


# How far from unit length a given vector may be: embeddings are L2-normalised float32 rows, so their
# norms differ from 1 by rounding only. Vectors are kept exactly as given (not re-normalised), so an
# embedding sent back (Embed, then Enroll or Identify) is the very vector the encoder produced.
NORM_TOLERANCE = 1e-3


def check_vector(vector: np.ndarray, dim: int, where: str) -> np.ndarray:
    """A finite, unit-length 1-D vector of the model's dimension, as float32, values unchanged."""
    v = np.asarray(vector)
    if v.dtype.kind not in "fiu":
        raise InvalidArgument(f"{where}: a vector must be numeric, got dtype {v.dtype}", field=where)
    v = v.astype(np.float32, copy=False).ravel()
    if v.shape[0] != dim:
        raise InvalidArgument(f"{where}: vector has dimension {v.shape[0]}, the server's model gives {dim}",
                              field=where)
    if not np.isfinite(v).all():
        raise InvalidArgument(f"{where}: vector holds NaN or infinite values", field=where)
    norm = float(np.linalg.norm(v.astype(np.float64)))
    if abs(norm - 1.0) > NORM_TOLERANCE:
        raise InvalidArgument(
            f"{where}: vector has norm {norm:.6g}; vectors must be L2-normalised embeddings from the "
            "server's model (see Embed)", field=where
        )
    return v


@dataclass
class Prepared:
    """A batch sorted into preprocessed images (in `images`, at request positions `image_pos`) and
    checked vectors (`vectors`, by request position). `failed` holds (position, reason) for items
    that were skipped (only when `prepare` was asked to collect failures)."""

    n: int
    dim: int
    images: np.ndarray
    image_pos: list[int]
    vectors: dict[int, np.ndarray]
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped: frozenset[int] = frozenset()

    @property
    def ok_positions(self) -> list[int]:
        """Request positions of the items that are usable, in order."""
        bad = {i for i, _ in self.failed} | self.skipped
        return [i for i in range(self.n) if i not in bad]

    def assemble(self, embedded: np.ndarray) -> np.ndarray:
        """(len(ok_positions), dim) float32: vectors and embedded images in request order."""
        out = np.empty((self.n, self.dim), dtype=np.float32)
        if self.image_pos:
            out[self.image_pos] = embedded
        for i, v in self.vectors.items():
            out[i] = v
        return np.ascontiguousarray(out[self.ok_positions])


def prepare(
    payloads: Sequence[object],
    where: Sequence[str],
    *,
    preprocess,
    dim: int,
    max_pixels: int,
    collect_failures: bool = False,
    skip: Sequence[int] = (),
    gate: contextlib.AbstractContextManager | None = None,
) -> Prepared:
    """Decode and preprocess the images of a batch, check its vectors.

    `where[i]` names payload i in errors ("probes[3]"). Without `collect_failures` the first bad item
    raises (InvalidArgument or ResourceExhausted); with it, bad items are listed in `failed`.
    Positions in `skip` are already known bad (the caller reports them): they are left out.
    `gate` (e.g. a semaphore) is held while each image is decoded: it bounds how many full-size images
    are in memory at once across concurrent calls.
    """
    gate = gate if gate is not None else contextlib.nullcontext()
    skipped = set(skip)
    images: list[np.ndarray] = []
    image_pos: list[int] = []
    vectors: dict[int, np.ndarray] = {}
    failed: list[tuple[int, str]] = []
    for i, payload in enumerate(payloads):
        if i in skipped:
            continue
        try:
            if isinstance(payload, np.ndarray) and payload.ndim == 1:
                vectors[i] = check_vector(payload, dim, where[i])
            elif isinstance(payload, (bytes, bytearray, memoryview, np.ndarray)):
                with gate:
                    images.append(_load(preprocess, payload, max_pixels, where[i]))
                image_pos.append(i)
            else:
                raise InvalidArgument(
                    f"{where[i]}: expected encoded image bytes, a pixel array or a vector, "
                    f"not {type(payload).__name__}", field=where[i]
                )
        except (InvalidArgument, ResourceExhausted) as exc:
            if not collect_failures:
                raise
            failed.append((i, exc.details))
    shape = (0, *preprocess.shape) if hasattr(preprocess, "shape") else (0,)
    stacked = np.ascontiguousarray(np.stack(images)) if images else np.zeros(shape, dtype=np.float32)
    return Prepared(len(payloads), dim, stacked, image_pos, vectors, failed, frozenset(skipped))


def _load(preprocess, image, max_pixels: int, where: str) -> np.ndarray:
    if isinstance(image, (bytearray, memoryview)):
        image = bytes(image)
    try:
        return preprocess.load(image, max_pixels=max_pixels)
    except ImageError as exc:
        raise image_error(exc, where) from None
    except (ValueError, TypeError, OSError, MemoryError) as exc:
        # Pillow can raise outside the encoder's own classes on hostile input; it is still the input.
        raise InvalidArgument(f"{where}: cannot read the image: {exc}", field=where) from None
