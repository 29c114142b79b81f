"""Conversions between wire messages (`twinsearch.v1`) and the Python types of `twinsearch.client.types`.

One function per type and direction: `x_to_pb` builds a message, `x_from_pb` reads one. The server
uses the `_to_pb` side for answers and the `_from_pb` side for requests; the client does the opposite.
Wire-level validation that needs no model (vector byte counts, raw image dtypes and shapes, finite
values) happens here and raises `InvalidArgument` naming the field.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twinsearch.client import types as t
from twinsearch.client.errors import InvalidArgument
from twinsearch.v1 import twinsearch_pb2 as pb

# ------------------------------------------------------------------------------------------ enums

_INDEX_KIND = {
    t.IndexKind.EXACT: pb.INDEX_KIND_EXACT,
    t.IndexKind.IVF: pb.INDEX_KIND_IVF,
    t.IndexKind.HNSW: pb.INDEX_KIND_HNSW,
}
_SCORING = {
    t.Scoring.NEAREST: pb.SCORING_NEAREST,
    t.Scoring.PROTOTYPE: pb.SCORING_PROTOTYPE,
    t.Scoring.MEAN_OF_K: pb.SCORING_MEAN_OF_K,
}
_THRESHOLD_SOURCE = {
    t.ThresholdSource.MODEL_EER: pb.THRESHOLD_SOURCE_MODEL_EER,
    t.ThresholdSource.MODEL_FAR_1: pb.THRESHOLD_SOURCE_MODEL_FAR_1,
    t.ThresholdSource.MODEL_FAR_0_1: pb.THRESHOLD_SOURCE_MODEL_FAR_0_1,
    t.ThresholdSource.GALLERY: pb.THRESHOLD_SOURCE_GALLERY,
    t.ThresholdSource.REQUEST: pb.THRESHOLD_SOURCE_REQUEST,
    t.ThresholdSource.REQUEST_FAR: pb.THRESHOLD_SOURCE_REQUEST_FAR,
}


def _inverse(mapping: dict) -> dict:
    return {v: k for k, v in mapping.items()}


_INDEX_KIND_FROM = _inverse(_INDEX_KIND)
_SCORING_FROM = _inverse(_SCORING)
_THRESHOLD_SOURCE_FROM = _inverse(_THRESHOLD_SOURCE)


def index_kind_to_pb(kind: t.IndexKind | str | None) -> int:
    return pb.INDEX_KIND_UNSPECIFIED if kind is None else _INDEX_KIND[t.IndexKind(kind)]


def index_kind_from_pb(value: int) -> t.IndexKind | None:
    """None for INDEX_KIND_UNSPECIFIED; InvalidArgument for a value this version does not know."""
    if value == pb.INDEX_KIND_UNSPECIFIED:
        return None
    try:
        return _INDEX_KIND_FROM[value]
    except KeyError:
        raise InvalidArgument(f"unknown index kind {value}") from None


def scoring_to_pb(scoring: t.Scoring | str | None) -> int:
    return pb.SCORING_UNSPECIFIED if scoring is None else _SCORING[t.Scoring(scoring)]


def scoring_from_pb(value: int) -> t.Scoring | None:
    """None for SCORING_UNSPECIFIED; InvalidArgument for a value this version does not know."""
    if value == pb.SCORING_UNSPECIFIED:
        return None
    try:
        return _SCORING_FROM[value]
    except KeyError:
        raise InvalidArgument(f"unknown scoring {value}") from None


def threshold_source_to_pb(source: t.ThresholdSource | None) -> int:
    return pb.THRESHOLD_SOURCE_UNSPECIFIED if source is None else _THRESHOLD_SOURCE[source]


def threshold_source_from_pb(value: int) -> t.ThresholdSource | None:
    return _THRESHOLD_SOURCE_FROM.get(value)


# ------------------------------------------------------------------------------ images, vectors

ImageLike = Any  # str | os.PathLike | bytes | PIL.Image.Image | np.ndarray (H x W or H x W x C)

RAW_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}


def _is_pil(obj: object) -> bool:
    return type(obj).__module__.startswith("PIL.")


def image_payload(image: ImageLike) -> bytes | np.ndarray:
    """A path, encoded bytes, a PIL image or a numpy array (H x W or H x W x C) as what travels:
    encoded bytes, or a pixel array.

    Paths are read as they are (the server decodes them); PIL images are encoded as PNG; arrays are
    passed through (the wire form is RawImage: uint8, uint16 or float32 in [0, 1]).
    """
    # What the server would refuse anyway is refused here, in the words of the local client's engine, so
    # that both clients say the same.
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise InvalidArgument("image data is empty (0 bytes)")
        return data
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"cannot read image file {str(path)!r}: {exc.strerror or exc}") from exc
        if not data:
            raise InvalidArgument(f"image file {str(path)!r} is empty (0 bytes)")
        return data
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise InvalidArgument("an image array must be H x W or H x W x C with C in 1, 3 or 4, got shape "
                                  f"{image.shape}")
        return image
    if _is_pil(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise InvalidArgument(
        f"an image must be a path, bytes, a PIL image or a numpy array, not {type(image).__name__}"
    )


def image_to_pb(image: ImageLike) -> pb.Image:
    """Any image input (see image_payload) as an Image message."""
    payload = image_payload(image)
    if isinstance(payload, np.ndarray):
        return pb.Image(raw=raw_image_to_pb(payload))
    return pb.Image(encoded=payload)


def raw_image_to_pb(array: np.ndarray) -> pb.RawImage:
    if array.ndim not in (2, 3):
        raise InvalidArgument(f"an image array must be H x W or H x W x C, got shape {array.shape}")
    name = array.dtype.name if array.dtype.name in RAW_DTYPES else "float32"
    data = np.ascontiguousarray(array, dtype=RAW_DTYPES[name])
    return pb.RawImage(dtype=name, shape=list(array.shape), data=data.tobytes())


def image_from_pb(message: pb.Image, where: str = "image") -> bytes | np.ndarray:
    """Encoded bytes as they came, or a raw image as a numpy array (checked, not yet preprocessed)."""
    kind = message.WhichOneof("kind")
    if kind == "encoded":
        if not message.encoded:
            raise InvalidArgument(f"{where}: empty image bytes", field=where)
        return message.encoded
    if kind == "raw":
        return raw_image_from_pb(message.raw, where)
    raise InvalidArgument(f"{where}: no image given", field=where)


def raw_image_from_pb(raw: pb.RawImage, where: str = "image") -> np.ndarray:
    dtype = RAW_DTYPES.get(raw.dtype)
    if dtype is None:
        raise InvalidArgument(f"{where}: raw dtype must be one of {sorted(RAW_DTYPES)}, got {raw.dtype!r}", field=where)
    shape = tuple(int(s) for s in raw.shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise InvalidArgument(f"{where}: raw shape must be [H, W] or [H, W, C] with C in 1, 3, 4; got {list(shape)}", field=where)
    if 0 in shape:
        raise InvalidArgument(f"{where}: raw image has a zero-size dimension: {list(shape)}", field=where)
    expected = math.prod(shape) * dtype.itemsize  # Python integers: a huge shape cannot wrap around to match
    if len(raw.data) != expected:
        raise InvalidArgument(
            f"{where}: raw {raw.dtype} image of shape {list(shape)} needs {expected} bytes, got {len(raw.data)}",
            field=where)
    return np.frombuffer(raw.data, dtype=dtype).reshape(shape)


def vector_to_pb(vector: np.ndarray) -> pb.Vector:
    v = np.ascontiguousarray(vector, dtype="<f4").ravel()
    return pb.Vector(data=v.tobytes(), dim=v.size)


def vector_from_pb(message: pb.Vector, where: str = "vector") -> np.ndarray:
    """A 1-D float32 array; InvalidArgument for a byte count that is not 4 * dim, or NaN / inf values."""
    if message.dim == 0:
        raise InvalidArgument(f"{where}: vector dimension is 0", field=where)
    if len(message.data) != 4 * message.dim:
        raise InvalidArgument(
            f"{where}: vector of dim {message.dim} needs {4 * message.dim} bytes, got {len(message.data)}",
            field=where)
    v = np.frombuffer(message.data, dtype="<f4").astype(np.float32)
    if not np.isfinite(v).all():
        raise InvalidArgument(f"{where}: vector holds NaN or infinite values", field=where)
    return v


def vectors_to_matrix(vectors: list[np.ndarray], where: str = "vectors") -> np.ndarray:
    """Stack 1-D vectors into a C-contiguous (n, dim) float32 matrix; all must share one dimension."""
    dims = {v.shape[0] for v in vectors}
    if len(dims) > 1:
        raise InvalidArgument(f"{where}: vectors of different dimensions {sorted(dims)} in one request", field=where)
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    return np.ascontiguousarray(np.stack(vectors), dtype=np.float32)


def is_vector(obj: object) -> bool:
    """A 1-D numpy array stands for an embedding; 2-D and 3-D arrays are images."""
    return isinstance(obj, np.ndarray) and obj.ndim == 1


def input_to_pb(item: ImageLike) -> pb.Input:
    """An image (see image_to_pb) or an embedding (a 1-D numpy array) as an Input message."""
    if is_vector(item):
        return pb.Input(vector=vector_to_pb(item))
    return pb.Input(image=image_to_pb(item))


def input_from_pb(message: pb.Input, where: str = "input") -> bytes | np.ndarray:
    """Bytes or a 2-D/3-D array for an image, a 1-D float32 array for a vector."""
    kind = message.WhichOneof("kind")
    if kind == "image":
        return image_from_pb(message.image, where)
    if kind == "vector":
        return vector_from_pb(message.vector, where)
    raise InvalidArgument(f"{where}: neither an image nor a vector given", field=where)


# -------------------------------------------------------------------------------------- thresholds


def threshold_to_pb(threshold: t.Threshold) -> pb.Threshold:
    message = pb.Threshold(distance=threshold.distance, source=threshold_source_to_pb(threshold.source))
    if threshold.far is not None:
        message.far = threshold.far
    return message


def threshold_from_pb(message: pb.Threshold) -> t.Threshold:
    return t.Threshold(
        distance=message.distance,
        source=threshold_source_from_pb(message.source),
        far=message.far if message.HasField("far") else None,
    )


def threshold_options_to_pb(threshold: float | None = None, target_far: float | None = None) -> pb.ThresholdOptions:
    if threshold is not None and target_far is not None:
        raise InvalidArgument("give a threshold or a target false-accept rate, not both", field="threshold")
    if threshold is not None:
        return pb.ThresholdOptions(threshold=threshold)
    if target_far is not None:
        return pb.ThresholdOptions(target_far=target_far)
    return pb.ThresholdOptions()


def threshold_options_from_pb(message: pb.ThresholdOptions) -> tuple[float | None, float | None]:
    """(threshold, target_far): at most one is set; ranges are checked by the core."""
    choice = message.WhichOneof("choice")
    if choice == "threshold":
        return float(message.threshold), None
    if choice == "target_far":
        return None, float(message.target_far)
    return None, None


def operating_point_to_pb(point: t.OperatingPoint) -> pb.OperatingPoint:
    return pb.OperatingPoint(
        name=point.name, distance=point.distance, far=point.far, frr=point.frr,
        genuine_pairs=point.genuine_pairs, impostor_pairs=point.impostor_pairs,
    )


def operating_point_from_pb(message: pb.OperatingPoint) -> t.OperatingPoint:
    return t.OperatingPoint(
        name=message.name, distance=message.distance, far=message.far, frr=message.frr,
        genuine_pairs=message.genuine_pairs, impostor_pairs=message.impostor_pairs,
    )


# ------------------------------------------------------------------------------------ info, model


def model_info_to_pb(info: t.ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=info.name, fingerprint=info.fingerprint, dim=info.dim, metric=info.metric,
        input=pb.InputSpec(width=info.input.width, height=info.input.height, channels=info.input.channels),
        thresholds=[operating_point_to_pb(p) for p in info.thresholds],
        default_threshold=threshold_source_to_pb(info.default_threshold),
    )


def model_info_from_pb(message: pb.ModelInfo) -> t.ModelInfo:
    return t.ModelInfo(
        name=message.name, fingerprint=message.fingerprint, dim=message.dim, metric=message.metric,
        input=t.InputSpec(width=message.input.width, height=message.input.height, channels=message.input.channels),
        thresholds=tuple(operating_point_from_pb(p) for p in message.thresholds),
        default_threshold=threshold_source_from_pb(message.default_threshold),
    )


def server_info_to_pb(info: t.ServerInfo) -> pb.InfoResponse:
    return pb.InfoResponse(
        server_version=info.server_version, api_version=info.api_version,
        model=model_info_to_pb(info.model), index_backend=info.index_backend,
        gpu=info.gpu, gpu_count=info.gpu_count, galleries=list(info.galleries),
        models=[model_info_to_pb(m) for m in info.models],
    )


def server_info_from_pb(message: pb.InfoResponse) -> t.ServerInfo:
    return t.ServerInfo(
        server_version=message.server_version, api_version=message.api_version,
        model=model_info_from_pb(message.model), index_backend=message.index_backend,
        gpu=message.gpu, gpu_count=message.gpu_count, galleries=tuple(message.galleries),
        # A server from before several models lists none: its one model is the default.
        models=tuple(model_info_from_pb(m) for m in message.models) or (model_info_from_pb(message.model),),
    )


# -------------------------------------------------------------------------------------- galleries


def index_spec_to_pb(spec: t.IndexSpec) -> tuple[int, pb.IndexParams]:
    params = pb.IndexParams(
        nlist=spec.nlist, nprobe=spec.nprobe, hnsw_m=spec.hnsw_m,
        ef_construction=spec.ef_construction, ef_search=spec.ef_search,
    )
    return index_kind_to_pb(spec.kind), params


def index_spec_from_pb(kind: int, params: pb.IndexParams) -> t.IndexSpec:
    default = t.IndexSpec()
    return t.IndexSpec(
        kind=index_kind_from_pb(kind) or default.kind,
        nlist=params.nlist,
        nprobe=params.nprobe,
        hnsw_m=params.hnsw_m or default.hnsw_m,
        ef_construction=params.ef_construction or default.ef_construction,
        ef_search=params.ef_search or default.ef_search,
    )


_MIGRATION_STATES = {
    t.MigrationState.RUNNING: pb.MIGRATION_STATE_RUNNING,
    t.MigrationState.PAUSED: pb.MIGRATION_STATE_PAUSED,
    t.MigrationState.FAILED: pb.MIGRATION_STATE_FAILED,
}
_MIGRATION_STATES_BACK = _inverse(_MIGRATION_STATES)


def migration_to_pb(m: t.Migration) -> pb.Migration:
    return pb.Migration(model=m.model or "", fingerprint=m.fingerprint, done=m.done, total=m.total,
                        state=_MIGRATION_STATES[t.MigrationState(m.state)], error=m.error or "")


def migration_from_pb(message: pb.Migration) -> t.Migration:
    return t.Migration(model=message.model or None, fingerprint=message.fingerprint, done=message.done,
                       total=message.total,
                       state=_MIGRATION_STATES_BACK.get(message.state, t.MigrationState.RUNNING),
                       error=message.error or None)


def gallery_to_pb(info: t.GalleryInfo) -> pb.Gallery:
    kind, params = index_spec_to_pb(info.index)
    message = pb.Gallery(
        name=info.name, model_fingerprint=info.model_fingerprint, dim=info.dim, index=kind,
        params=params, scoring=scoring_to_pb(info.scoring), mean_k=info.mean_k,
        class_count=info.class_count, item_count=info.item_count, on_gpu=info.on_gpu,
        model=info.model or "", keep_images=info.keep_images,
    )
    if info.threshold is not None:
        message.threshold = info.threshold
    if info.cohort_threshold is not None:
        message.cohort_threshold = info.cohort_threshold
    if info.migration is not None:
        message.migration.CopyFrom(migration_to_pb(info.migration))
    return message


def gallery_from_pb(message: pb.Gallery) -> t.GalleryInfo:
    return t.GalleryInfo(
        name=message.name, model_fingerprint=message.model_fingerprint, dim=message.dim,
        index=index_spec_from_pb(message.index, message.params),
        scoring=scoring_from_pb(message.scoring) or t.Scoring.NEAREST, mean_k=message.mean_k,
        threshold=message.threshold if message.HasField("threshold") else None,
        class_count=message.class_count, item_count=message.item_count, on_gpu=message.on_gpu,
        model=message.model or None, keep_images=message.keep_images,
        migration=migration_from_pb(message.migration) if message.HasField("migration") else None,
        cohort_threshold=message.cohort_threshold if message.HasField("cohort_threshold") else None,
    )


def gallery_update_to_pb(name: str, *, threshold, cohort_threshold, scoring, mean_k) -> pb.UpdateGalleryRequest:
    """An UpdateGalleryRequest: thresholds None clear, KEEP leave; scoring and mean_k None leave."""
    request = pb.UpdateGalleryRequest(name=name, scoring=scoring_to_pb(scoring), mean_k=mean_k or 0)
    if threshold is None:
        request.clear_threshold = True
    elif threshold is not t.KEEP:
        request.threshold = threshold
    if cohort_threshold is None:
        request.clear_cohort_threshold = True
    elif cohort_threshold is not t.KEEP:
        request.cohort_threshold = cohort_threshold
    return request


def gallery_update_from_pb(request: pb.UpdateGalleryRequest) -> dict:
    """The keyword arguments of `update_gallery` from an UpdateGalleryRequest."""
    changes: dict = {"scoring": scoring_from_pb(request.scoring), "mean_k": request.mean_k or None}
    for name in ("threshold", "cohort_threshold"):
        if request.HasField(name) and getattr(request, f"clear_{name}"):
            raise InvalidArgument(f"give {name} or clear_{name}, not both", field=name)
        changes[name] = (getattr(request, name) if request.HasField(name)
                         else None if getattr(request, f"clear_{name}") else t.KEEP)
    return changes


def migration_start_to_pb(start: t.MigrationStart) -> pb.MigrateGalleryResponse:
    message = pb.MigrateGalleryResponse(gallery=gallery_to_pb(start.gallery))
    if start.dropped_threshold is not None:
        message.dropped_threshold = start.dropped_threshold
    if start.dropped_cohort_threshold is not None:
        message.dropped_cohort_threshold = start.dropped_cohort_threshold
    return message


def migration_start_from_pb(message: pb.MigrateGalleryResponse) -> t.MigrationStart:
    return t.MigrationStart(
        gallery=gallery_from_pb(message.gallery),
        dropped_threshold=message.dropped_threshold if message.HasField("dropped_threshold") else None,
        dropped_cohort_threshold=(message.dropped_cohort_threshold if message.HasField("dropped_cohort_threshold")
                                  else None),
    )


# ------------------------------------------------------------------------------ enroll and classes


def enrolled_to_pb(item: t.Enrolled) -> pb.EnrolledItem:
    return pb.EnrolledItem(id=item.id, client_id=item.client_id or "", label=item.label, created=item.created)


def enrolled_from_pb(message: pb.EnrolledItem) -> t.Enrolled:
    return t.Enrolled(id=message.id, client_id=message.client_id or None, label=message.label,
                      created=message.created)


def enroll_failure_to_pb(failure: t.EnrollFailure) -> pb.EnrollFailure:
    return pb.EnrollFailure(index=failure.index, client_id=failure.client_id or "", reason=failure.reason)


def enroll_failure_from_pb(message: pb.EnrollFailure) -> t.EnrollFailure:
    return t.EnrollFailure(index=message.index, client_id=message.client_id or None, reason=message.reason)


def enroll_result_to_pb(result: t.EnrollResult, sequence: int = 0) -> pb.EnrollResponse:
    return pb.EnrollResponse(
        items=[enrolled_to_pb(i) for i in result.stored],
        failed=[enroll_failure_to_pb(f) for f in result.failed],
        sequence=sequence,
    )


def enroll_result_from_pb(message: pb.EnrollResponse) -> t.EnrollResult:
    return t.EnrollResult(
        stored=tuple(enrolled_from_pb(i) for i in message.items),
        failed=tuple(enroll_failure_from_pb(f) for f in message.failed),
    )


def gallery_page_to_pb(page: t.GalleryPage) -> pb.ListGalleriesResponse:
    return pb.ListGalleriesResponse(galleries=[gallery_to_pb(g) for g in page.galleries],
                                    next_page_token=page.next_page_token)


def gallery_page_from_pb(message: pb.ListGalleriesResponse) -> t.GalleryPage:
    return t.GalleryPage(galleries=tuple(gallery_from_pb(g) for g in message.galleries),
                         next_page_token=message.next_page_token)


def class_page_to_pb(page: t.ClassPage) -> pb.ListClassesResponse:
    return pb.ListClassesResponse(
        classes=[pb.ClassCount(label=c.label, count=c.count) for c in page.classes],
        next_page_token=page.next_page_token,
    )


def class_page_from_pb(message: pb.ListClassesResponse) -> t.ClassPage:
    return t.ClassPage(
        classes=tuple(t.ClassCount(label=c.label, count=c.count) for c in message.classes),
        next_page_token=message.next_page_token,
    )


def metadata_from_pb(metadata: Mapping[str, str]) -> dict[str, str]:
    return dict(metadata)


# ----------------------------------------------------------------------------- query answers


def neighbor_to_pb(n: t.Neighbor) -> pb.Neighbor:
    return pb.Neighbor(id=n.id, client_id=n.client_id or "", label=n.label, distance=n.distance,
                       metadata=n.metadata)


def neighbor_from_pb(message: pb.Neighbor) -> t.Neighbor:
    return t.Neighbor(id=message.id, label=message.label, distance=message.distance,
                      client_id=message.client_id or None, metadata=dict(message.metadata))


def neighbors_to_pb(results: list[list[t.Neighbor]]) -> pb.SearchResponse:
    return pb.SearchResponse(results=[pb.Neighbors(neighbors=[neighbor_to_pb(n) for n in r]) for r in results])


def neighbors_from_pb(message: pb.SearchResponse) -> list[list[t.Neighbor]]:
    return [[neighbor_from_pb(n) for n in r.neighbors] for r in message.results]


def candidate_to_pb(c: t.Candidate) -> pb.Candidate:
    message = pb.Candidate(label=c.label, distance=c.distance, nearest_ids=list(c.nearest_ids))
    if c.probability is not None:
        message.probability = c.probability
    return message


def candidate_from_pb(message: pb.Candidate) -> t.Candidate:
    return t.Candidate(
        label=message.label, distance=message.distance,
        probability=message.probability if message.HasField("probability") else None,
        nearest_ids=tuple(message.nearest_ids),
    )


def identification_to_pb(result: t.Identification) -> pb.Identification:
    message = pb.Identification(
        known=result.label is not None, label=result.label or "",
        candidates=[candidate_to_pb(c) for c in result.candidates],
        threshold=threshold_to_pb(result.threshold),
    )
    if result.margin is not None:
        message.margin = result.margin
    return message


def identification_from_pb(message: pb.Identification) -> t.Identification:
    return t.Identification(
        label=message.label if message.known else None,
        candidates=tuple(candidate_from_pb(c) for c in message.candidates),
        threshold=threshold_from_pb(message.threshold),
        margin=message.margin if message.HasField("margin") else None,
    )


def identify_response_to_pb(results: list[t.Identification | t.ProbeFailure]) -> pb.IdentifyResponse:
    """Answers in probe order; probe failures go to `failed` (by index), the rest to `results`."""
    return pb.IdentifyResponse(
        results=[identification_to_pb(r) for r in results if not isinstance(r, t.ProbeFailure)],
        failed=[pb.ProbeFailure(index=r.index, reason=r.reason) for r in results if isinstance(r, t.ProbeFailure)],
    )


def identify_response_from_pb(message: pb.IdentifyResponse) -> list[t.Identification | t.ProbeFailure]:
    """One entry per probe, in order: an Identification, or a ProbeFailure where the probe failed."""
    failed = {f.index: t.ProbeFailure(index=f.index, reason=f.reason) for f in message.failed}
    answers = iter(message.results)
    n = len(message.results) + len(failed)
    return [failed[i] if i in failed else identification_from_pb(next(answers)) for i in range(n)]


def verification_to_pb(result: t.Verification) -> pb.Verification:
    message = pb.Verification(distance=result.distance, same=result.same,
                              threshold=threshold_to_pb(result.threshold))
    if result.probability is not None:
        message.probability = result.probability
    return message


def verification_from_pb(message: pb.Verification) -> t.Verification:
    return t.Verification(
        same=message.same, distance=message.distance, threshold=threshold_from_pb(message.threshold),
        probability=message.probability if message.HasField("probability") else None,
    )
