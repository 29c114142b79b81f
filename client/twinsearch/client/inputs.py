"""What callers may pass, turned into what both clients hand on.

The public methods of `Client` and `LocalClient` accept, wherever an image goes, a path, bytes, a PIL
image or a numpy array (H x W or H x W x C), and wherever a vector may replace an image, a 1-D numpy
array, or many vectors as one (n, dim) float matrix. Wherever a list goes a single item works too.
This module decides, once for both clients:

- whether an argument is one item or a batch (`as_batch`);
- the canonical payload of one item (`payload`): encoded bytes, a pixel array in a wire dtype (uint8,
  uint16 or float32), or a 1-D float32 vector. The remote client sends exactly this; the local client
  hands exactly this to the engine, so both see the same input and give the same answer;
- how an error names an input: the server names it by position ("probes[1]: cannot identify the image
  format"); `name_input` adds what the caller passed when it has a name, the path or a PIL image's file
  name ("probes[1] (scans/b.png): ..."), and maps positions among the items sent back to the caller's.

A 2-D numpy array is an image, except a float (float32 or float64) matrix whose width is the model's
dimension: that is n vectors, one per row, as FAISS and vector databases take them. An image is
uint8, uint16 or bool, or has a channel axis (H x W x C); a float grayscale image exactly as wide as
the model's dimension must be given with a channel axis (H x W x 1) or as uint8.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from twinsearch.client.convert import RAW_DTYPES, ImageLike, image_payload, is_vector
from twinsearch.client.errors import InvalidArgument, TwinsearchError
from twinsearch.client.types import EnrollFailure, EnrollItem, Payload, ProbeFailure


def is_single(obj: object) -> bool:
    """True for one image or vector; False for a list, tuple or other iterable of them."""
    if isinstance(obj, (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray)):
        return True
    if type(obj).__module__.startswith("PIL."):
        return True
    return not isinstance(obj, Iterable)


def may_be_vectors(obj: object) -> bool:
    """True for a 2-D float array: n vectors when its width is the model's dimension, else an image."""
    return isinstance(obj, np.ndarray) and obj.ndim == 2 and obj.dtype.kind == "f"


def as_batch(obj: object, dim: int | None = None) -> tuple[list, bool]:
    """(items, single): a list of items and whether the caller passed one item rather than a list.

    With `dim` (the model's dimension), a 2-D float array of that width is a batch of its rows.
    """
    if may_be_vectors(obj) and dim is not None and obj.shape[1] == dim:  # type: ignore[union-attr]
        return list(obj), False  # type: ignore[call-overload]
    if is_single(obj):
        return [obj], True
    return list(obj), False  # type: ignore[call-overload]


def payload(item: ImageLike, where: str = "image") -> Payload:
    """The canonical payload of an image or a vector (see the module docstring).

    Raises InvalidArgument, naming `where`, for what is neither, and for an array that does not hold
    numbers or whose integer pixels are neither uint8 nor uint16 nor in [0, 1] (as float pixels must be).
    """
    if isinstance(item, np.ndarray) and item.dtype.kind not in "biuf":
        kind = "a vector" if is_vector(item) else "an image array"
        raise InvalidArgument(f"{where}: {kind} must hold numbers, got dtype {item.dtype}", field=where)
    if is_vector(item):
        vector = np.ascontiguousarray(item, dtype=np.float32)
        if vector.size == 0:
            raise InvalidArgument(f"{where}: empty vector", field=where)
        return vector
    try:
        out = image_payload(item)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc.details}", field=where) from None
    if isinstance(out, np.ndarray):
        if out.dtype.kind in "iu" and out.dtype.name not in RAW_DTYPES and out.size and (out.min() < 0 or out.max() > 1):
            raise InvalidArgument(
                f"{where}: an image array of {out.dtype} holds values from {out.min()} to {out.max()}: give pixels "
                "as uint8 or uint16, or as floats in [0, 1]", field=where)
        # The same dtype the wire form carries (convert.raw_image_to_pb): uint8, uint16, else float32.
        dtype = out.dtype.name if out.dtype.name in RAW_DTYPES else "float32"
        out = np.ascontiguousarray(out, dtype=dtype)
    return out


def payloads(items: Sequence[ImageLike], what: str = "images") -> list[Payload]:
    if not items:
        raise InvalidArgument(f"no {what} given")
    return [payload(x, f"{what}[{i}]") for i, x in enumerate(items)]


def broadcast(value: object, n: int, what: str, hint: str = "") -> list:
    """A per-item list from one value (repeated) or a list of exactly n values (else InvalidArgument,
    with `hint` appended)."""
    if value is None or isinstance(value, (str, Mapping)):
        return [value] * n
    if not isinstance(value, Iterable):
        raise InvalidArgument(f"{what} must be one value for all items or a list of one per item, "
                              f"got {type(value).__name__}")
    values = list(value)  # type: ignore[call-overload]
    if len(values) != n:
        raise InvalidArgument(f"{len(values)} {what} for {n} items{hint}")
    return values


def matrix_hint(batch: Sequence[object], dim: int | None = None) -> str:
    """Why a batch is one item when the caller meant many: a 2-D array read as one image. "" otherwise."""
    if len(batch) != 1 or not isinstance(batch[0], np.ndarray) or batch[0].ndim != 2:
        return ""
    width = f"{dim} (the model's dimension)" if dim is not None else "the model's dimension"
    return (f"; a 2-D {batch[0].dtype} array of shape {batch[0].shape} is read as one image: pass n vectors "
            f"as an (n, dim) float32 matrix whose width is {width}, or as a list of 1-D arrays")


def text(value: object, what: str) -> str:
    """`value` if it is a string that can be sent (UTF-8 encodable: no lone surrogates); InvalidArgument
    otherwise, the same from the remote client and the local one."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, got {type(value).__name__}", field=what)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{what} is not valid text: {exc.reason} at position {exc.start}", field=what) from None
    return value


def enroll_items(
    label: str | Sequence[str],
    images: object,
    ids: str | Sequence[str | None] | None = None,
    metadata: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    dim: int | None = None,
    failed: dict[int, EnrollFailure] | None = None,
) -> list[EnrollItem]:
    """Items for `enroll`: one label for all images or one per image; client ids and metadata the same.

    `images` as `as_batch` takes them, with `dim` the model's dimension (for a matrix of vectors).
    With a `failed` dict (enroll's skip_invalid), an item that cannot be read or converted here (a
    missing file, a bad vector) is left out and its EnrollFailure put in `failed` under its position,
    instead of raising InvalidArgument.
    """
    batch, _ = as_batch(images, dim)
    if not batch:
        raise InvalidArgument("no images given")
    n = len(batch)
    hint = matrix_hint(batch, dim)
    labels = broadcast(label, n, "labels", hint)
    if isinstance(ids, str):
        if n != 1:
            raise InvalidArgument(f"one client id for {n} items: give one id per item")
        ids = [ids]
    client_ids = broadcast(ids, n, "client ids", hint)
    metas = broadcast(metadata, n, "metadata entries", hint)
    items = []
    for i in range(n):
        meta = metas[i] or {}
        if not isinstance(meta, Mapping):
            raise InvalidArgument(f"items[{i}].metadata must map strings to strings, got {type(meta).__name__}",
                                  field=f"items[{i}].metadata")
        item_label = text(labels[i], f"items[{i}].label")
        if isinstance(client_ids[i], str) and not client_ids[i]:  # the wire cannot tell "" from no id
            raise InvalidArgument(f"items[{i}].client_id is empty: give None for an item without a client id",
                                  field=f"items[{i}].client_id")
        try:
            data = payload(batch[i], f"items[{i}]")
        except InvalidArgument as exc:
            if failed is None:
                raise
            cid = client_ids[i] if isinstance(client_ids[i], str) and client_ids[i] else None
            failed[i] = EnrollFailure(index=i, client_id=cid, reason=exc.details)
            continue
        items.append(EnrollItem(
            label=item_label, payload=data,
            client_id=text(client_ids[i], f"items[{i}].client_id") if client_ids[i] else None,
            metadata={text(k, f"items[{i}].metadata key"): text(v, f"items[{i}].metadata[{k!r}]")
                      for k, v in meta.items()}))
    return items


# ------------------------------------------------------------------------------ naming inputs

# "probes[3]", "items[0]", "pairs[2].b", "queries[1].probe" at the start of an error's details.
_POSITION = re.compile(r"(?P<field>\w+)\[(?P<i>\d+)\](?P<part>\.\w+)?")


def source_name(obj: object) -> str | None:
    """The name the caller gave an input, if any: a path, or the file a PIL image was opened from."""
    if isinstance(obj, (str, os.PathLike)):
        return str(os.fspath(obj))
    if type(obj).__module__.startswith("PIL."):
        return getattr(obj, "filename", None) or None
    return None


def name_input(details: str, sources: Mapping[str, Sequence[object]],
               positions: Sequence[int] | None = None) -> str:
    """`details` with the input it starts with named as the caller knows it.

    `sources` maps a field as errors name it ("probes", "pairs.a") to what the caller passed for it;
    `positions[j]` is the caller's position of the j-th item sent (None: the same positions). So
    "probes[1]: cannot identify the image format" becomes "probes[4] (scans/b.png): cannot identify
    the image format" when the second probe sent was the caller's fifth, given as that path.
    """
    m = _POSITION.match(details)
    if m is None:
        return details
    field_name, part = m["field"], m["part"] or ""
    items = sources.get(field_name + part)
    i = int(m["i"])
    if items is None or (positions is not None and i >= len(positions)):
        return details
    i = positions[i] if positions is not None else i
    name = source_name(items[i]) if i < len(items) else None
    named = f" ({name})" if name and name not in details else ""
    return f"{field_name}[{i}]{part}{named}{details[m.end():]}"


@contextmanager
def naming_inputs(sources: Mapping[str, Sequence[object]], positions: Sequence[int] | None = None) -> Iterator[None]:
    """Errors raised inside name their input as `name_input` does (same exception, details rewritten)."""
    try:
        yield
    except TwinsearchError as exc:
        named = name_input(exc.details, sources, positions)
        if named != exc.details:
            exc.details = named
            exc.args = (named,)
        if exc.field and positions is not None:
            # The field names the item by its position among those sent: the caller's position instead.
            m = _POSITION.match(exc.field)
            if m is not None and m.end() == len(exc.field) and int(m["i"]) < len(positions):
                exc.field = f"{m['field']}[{positions[int(m['i'])]}]{m['part'] or ''}"
        raise


def in_caller_order(n: int, failures: Mapping[int, ProbeFailure], positions: Sequence[int],
                    answers: Sequence[object], sources: Mapping[str, Sequence[object]] | None = None) -> list:
    """One entry per caller position: `failures` where the item failed before it was sent, else the
    answer for it (`answers[j]` answers the item sent j-th, at `positions[j]`). A ProbeFailure among
    the answers moves to the caller's position, its reason named by `name_input` with `sources`."""
    out: dict[int, object] = dict(failures)
    for position, answer in zip(positions, answers, strict=True):
        if isinstance(answer, ProbeFailure):
            reason = name_input(answer.reason, sources or {}, positions)
            answer = ProbeFailure(index=position, reason=reason)
        out[position] = answer
    return [out[i] for i in range(n)]
