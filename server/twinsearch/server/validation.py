"""Checks on what callers pass to the gallery core, raising the project's error classes.

Every message says what was wrong and where ("item 3: ..."), because it travels unchanged to a
remote caller as the gRPC status details.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from twinsearch.client.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

from .limits import LIMITS

_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{LIMITS.gallery_name_length - 1}}}$")
MAX_LABEL_LENGTH = LIMITS.label_length
MAX_CLIENT_ID_LENGTH = LIMITS.client_id_length


def check_gallery_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):  # not match: its $ passes a final newline
        raise InvalidArgument(
            f"gallery name {name!r} is not valid: 1 to {LIMITS.gallery_name_length} letters, digits, '_', '.', "
            "'-', starting with a letter or digit", field="name")
    return name


def check_vectors(vectors: object, dim: int, gallery: str, what: str = "vectors") -> np.ndarray:
    """Return `vectors` as a C-contiguous float32 array of shape (n, dim), n >= 1.

    Raises InvalidArgument for a non-2-D array, a wrong dimension, an empty batch, or a row with
    NaN or infinite values (naming the first such row).
    """
    try:
        arr = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} are not a numeric array: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise InvalidArgument(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidArgument(f"{what} must be a 2-D array (n, {dim}), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InvalidArgument(f"{what} are empty: shape {arr.shape}")
    if arr.shape[1] != dim:
        raise InvalidArgument(
            f"{what} have {arr.shape[1]} dimensions, gallery {gallery!r} expects {dim}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InvalidArgument(f"item {bad}: vector has NaN or infinite values")
    return arr


def check_labels(labels: object, n: int, what: str = "labels") -> list[str]:
    if isinstance(labels, str):
        raise InvalidArgument(f"{what} must be a sequence of strings, not one string")
    labels = list(labels)  # type: ignore[arg-type]
    if len(labels) != n:
        raise InvalidArgument(f"{len(labels)} {what} for {n} vectors")
    for i, label in enumerate(labels):
        check_label(label, where=f"item {i}: ")
    return labels


def check_label(label: object, where: str = "", field: str | None = None) -> str:
    """`label` when it is 1 to `LIMITS.label_length` characters, not all blank; InvalidArgument (its
    message prefixed by `where`, its field violation naming `field`) otherwise."""
    if not isinstance(label, str):
        raise InvalidArgument(f"{where}label must be a string, got {type(label).__name__}", field=field)
    if not label or not label.strip():
        raise InvalidArgument(f"{where}empty label", field=field)
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidArgument(f"{where}label is {len(label)} characters long, at most {MAX_LABEL_LENGTH}",
                              field=field)
    return label


def check_client_ids(client_ids: Sequence[str | None] | None, n: int) -> list[str | None]:
    if client_ids is None:
        return [None] * n
    if isinstance(client_ids, str):
        raise InvalidArgument("client_ids must be a sequence of strings, not one string")
    out = list(client_ids)
    if len(out) != n:
        raise InvalidArgument(f"{len(out)} client ids for {n} vectors")
    seen: dict[str, int] = {}
    for i, cid in enumerate(out):
        if cid is None or cid == "":
            out[i] = None
            continue
        if not isinstance(cid, str):
            raise InvalidArgument(f"item {i}: client id must be a string, got {type(cid).__name__}")
        if len(cid) > MAX_CLIENT_ID_LENGTH:
            raise InvalidArgument(f"item {i}: client id is {len(cid)} characters, at most {MAX_CLIENT_ID_LENGTH}")
        if cid in seen:
            raise InvalidArgument(f"item {i}: client id {cid!r} repeats item {seen[cid]} of the same batch")
        seen[cid] = i
    return out


def check_metadata(metadata: Sequence[dict[str, str]] | None, n: int) -> list[dict[str, str]]:
    if metadata is None:
        return [{}] * n
    out = list(metadata)
    if len(out) != n:
        raise InvalidArgument(f"{len(out)} metadata entries for {n} vectors")
    for i, md in enumerate(out):
        if md is None:
            out[i] = {}
            continue
        if not isinstance(md, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
            raise InvalidArgument(f"item {i}: metadata must map strings to strings")
    return out


def check_k(k: object, limit: int, what: str = "k") -> int:
    """`k` as an int when it is an integer in [1, limit]; InvalidArgument for the field `what` otherwise."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidArgument(f"{what} must be an integer, got {k!r}", field=what)
    if k < 1 or k > limit:
        raise InvalidArgument(f"{what} must be between 1 and {limit}, got {k}", field=what)
    return int(k)


def check_query_count(n: int, limit: int) -> None:
    if n > limit:
        raise ResourceExhausted(f"{n} query vectors in one call, at most {limit}")


def check_threshold(threshold: object, what: str = "threshold", field: str = "threshold") -> float | None:
    """None, or `threshold` as a float when it is a distance in [0, LIMITS.max_distance]."""
    if threshold is None:
        return None
    try:
        value = float(threshold)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} must be a number, got {threshold!r}", field=field) from exc
    # Distances between unit vectors lie in [0, 2]: a threshold outside cannot be meant.
    if not math.isfinite(value) or not 0.0 <= value <= LIMITS.max_distance:
        raise InvalidArgument(f"{what} must be a distance in [0, {LIMITS.max_distance:g}], got {threshold!r}",
                              field=field)
    return value


def check_target_far(target_far: object) -> float | None:
    """None, or `target_far` as a float when it is a false-accept rate in (0, 1]."""
    if target_far is None:
        return None
    try:
        far = float(target_far)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"target false-accept rate must be a number, got {target_far!r}",
                              field="target_far") from exc
    if not (0.0 < far <= 1.0) or not math.isfinite(far):
        raise InvalidArgument(f"target false-accept rate must be in (0, 1], got {target_far!r}", field="target_far")
    return far


class ModelChanged(FailedPrecondition):
    """The gallery is bound to another model than the vectors of this call come from: a migration
    switched it while the call was under way. The engine embeds again with the new model and retries."""


def check_fingerprint(given: str | None, expected: str, gallery: str) -> None:
    if given is not None and given != expected:
        raise ModelChanged(
            f"gallery {gallery!r} holds vectors of model {expected!r}, these come from model {given!r}"
        )
