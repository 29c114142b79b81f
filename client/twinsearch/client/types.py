"""The Python types of the twinsearch API: what every call returns, remote or local.

These dataclasses are the base layer: the gallery core builds its answers out of them, the gRPC
server converts them to wire messages (`twinsearch.client.convert`), and the client converts them
back. A caller never sees a protobuf object.

Distances are Euclidean distances between L2-normalised embeddings: in [0, 2], **smaller means more
alike**. A pair or a class is accepted as "same" when its distance is <= the threshold in force.
Probabilities are calibrated probabilities of "same" (higher means more alike), present only when
the model carries a calibration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# The longest timeout a call may have, in seconds: gRPC keeps a deadline as nanoseconds since the epoch in an
# int64, and one past about 7e9 s from now overflows (the call fails at once with DEADLINE_EXCEEDED). A
# billion seconds (31 years) is "no deadline" enough.
MAX_TIMEOUT_S = 1e9

# What goes where an image or vector goes, in canonical form: encoded image bytes, a pixel array
# (H x W or H x W x C; uint8, uint16 or float32) or a 1-D float32 vector.
Payload = Any


class _Keep:
    """The type of `KEEP`."""

    def __repr__(self) -> str:
        return "KEEP"


# `update_gallery(name, threshold=KEEP)`: leave that setting as it is (None clears it).
KEEP: Any = _Keep()


@dataclass(frozen=True)
class EnrollItem:
    """One item to enroll: its class label, an image or vector payload, an optional client id (makes
    re-sending idempotent) and free-form string metadata (returned by search). The clients build these
    from what callers pass (`inputs.enroll_items`); the engine takes them as they are."""

    label: str
    payload: Payload
    client_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class IndexKind(str, Enum):
    """How a gallery's vectors are searched."""

    EXACT = "exact"  # flat, exhaustive: exact answers
    IVF = "ivf"      # inverted lists over k-means cells: approximate, fast on large galleries
    HNSW = "hnsw"    # graph search: approximate, fast, CPU only


class Scoring(str, Enum):
    """How the distance from a probe to a class is computed from the class's exemplars."""

    NEAREST = "nearest"      # distance to the nearest exemplar of the class
    PROTOTYPE = "prototype"  # distance to the class mean (prototype), re-normalised to unit length
    MEAN_OF_K = "mean_of_k"  # mean distance to the class's k nearest exemplars


class ThresholdSource(str, Enum):
    """Where a decision threshold came from."""

    MODEL_EER = "model_eer"          # model card: equal error rate on held-out classes
    MODEL_FAR_1 = "model_far_1"      # model card: false-accept rate 1%
    MODEL_FAR_0_1 = "model_far_0_1"  # model card: false-accept rate 0.1%
    GALLERY = "gallery"              # the gallery's own override
    REQUEST = "request"              # the request's explicit threshold
    REQUEST_FAR = "request_far"      # the request's target false-accept rate, mapped by the model card


@dataclass(frozen=True)
class Threshold:
    """A decision threshold on distance: "same" when distance <= `distance`.

    `far` is the false-accept rate measured at it on the model's calibration pairs, when known.
    """

    distance: float
    source: ThresholdSource
    far: float | None = None


@dataclass(frozen=True)
class OperatingPoint:
    """A calibrated threshold from the model card, with the rates measured at it."""

    name: str             # "eer", "far_1" or "far_0_1"
    distance: float       # accept when distance <= this
    far: float            # false-accept rate on the calibration pairs
    frr: float            # false-reject rate on the calibration pairs
    genuine_pairs: int    # how many same-class pairs it was measured on
    impostor_pairs: int   # how many different-class pairs it was measured on


@dataclass(frozen=True)
class InputSpec:
    """What the model's preprocessing produces: channels x height x width."""

    width: int
    height: int
    channels: int


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fingerprint: str
    dim: int
    metric: str                       # "euclidean" on L2-normalised vectors; smaller = more alike
    input: InputSpec
    thresholds: tuple[OperatingPoint, ...] = ()
    default_threshold: ThresholdSource | None = None


@dataclass(frozen=True)
class IndexSpec:
    """Index kind and its main parameters; 0 means "choose from the gallery size"."""

    kind: IndexKind = IndexKind.EXACT
    nlist: int = 0            # IVF: number of cells
    nprobe: int = 0           # IVF: cells visited per query
    hnsw_m: int = 32          # HNSW: links per node
    ef_construction: int = 40  # HNSW: build-time beam width
    ef_search: int = 64       # HNSW: query-time beam width


class MigrationState(str, Enum):
    """Where a gallery's migration to another model stands."""

    RUNNING = "running"  # items are being embedded with the new model
    PAUSED = "paused"    # the server does not hold the new model (restart it with that model)
    FAILED = "failed"    # stopped on an error; migrating again retries


@dataclass(frozen=True)
class Migration:
    """A gallery's migration to another model, in progress: the gallery answers with its current model
    until `done` reaches `total`, then switches to the new one at once."""

    model: str | None             # name of the model migrated to (None: not held by the server)
    fingerprint: str              # its fingerprint
    done: int                     # items embedded with the new model so far
    total: int                    # items in the gallery now
    state: MigrationState = MigrationState.RUNNING
    error: str | None = None      # why it failed (FAILED only)

    @property
    def fraction(self) -> float:
        """done / total, in [0, 1] (1.0 for an empty gallery)."""
        return 1.0 if self.total == 0 else min(1.0, self.done / self.total)


@dataclass(frozen=True)
class GalleryInfo:
    name: str
    model_fingerprint: str
    dim: int
    index: IndexSpec
    scoring: Scoring
    mean_k: int                   # k for Scoring.MEAN_OF_K
    threshold: float | None       # the gallery's threshold override, if any
    class_count: int = 0
    item_count: int = 0
    on_gpu: bool = False
    model: str | None = None       # name of the served model it is bound to (None: the server lacks it)
    keep_images: bool = False      # enrolled images are kept, so the gallery can be migrated
    migration: Migration | None = None  # a migration to another model under way
    cohort_threshold: float | None = None  # default threshold of cohort-normalized verify_class calls


@dataclass(frozen=True)
class MigrationStart:
    """The answer to `migrate_gallery`: the gallery with its migration, and the gallery's threshold
    overrides that the switch to the new model drops (of the old model's embeddings), where it has them."""

    gallery: GalleryInfo
    dropped_threshold: float | None = None
    dropped_cohort_threshold: float | None = None


@dataclass(frozen=True)
class Enrolled:
    """One enrolled item as stored: `created` is False when its client id was already stored."""

    id: int
    client_id: str | None
    label: str
    created: bool


@dataclass(frozen=True)
class EnrollFailure:
    """An item of a batch that was not stored (with skip_invalid), and why."""

    index: int          # position in the batch
    client_id: str | None
    reason: str


@dataclass(frozen=True)
class EnrollResult:
    stored: tuple[Enrolled, ...]
    failed: tuple[EnrollFailure, ...] = ()

    @property
    def ids(self) -> tuple[int, ...]:
        """The stored ids of the enrolled items, in request order (failed items left out)."""
        return tuple(item.id for item in self.stored)


@dataclass(frozen=True)
class ClassCount:
    label: str
    count: int


@dataclass(frozen=True)
class ClassPage:
    classes: tuple[ClassCount, ...]
    next_page_token: str = ""   # empty on the last page


@dataclass(frozen=True)
class GalleryPage:
    galleries: tuple[GalleryInfo, ...]
    next_page_token: str = ""   # empty on the last page


@dataclass(frozen=True)
class Neighbor:
    """A stored item near a probe (Search)."""

    id: int
    label: str
    distance: float
    client_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """A class ranked for a probe (Identify): smaller distance ranks first."""

    label: str
    distance: float
    probability: float | None = None
    nearest_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Identification:
    """The answer for one probe: the decided label, or None for unknown (open set).

    `margin` is the second class's distance minus the first's (>= 0; larger is a clearer decision),
    None when fewer than two classes were ranked.
    """

    label: str | None
    candidates: tuple[Candidate, ...]
    threshold: Threshold
    margin: float | None = None

    @property
    def known(self) -> bool:
        return self.label is not None


@dataclass(frozen=True)
class ProbeFailure:
    """A probe that got no answer (identify with `skip_invalid`), in its place among the answers."""

    index: int          # position of the probe in the call
    reason: str         # names the probe: "probes[3] (scans/a.png): cannot identify the image format"


@dataclass(frozen=True)
class Verification:
    """Same or different, for an image pair (Verify) or a probe against a class (VerifyClass)."""

    same: bool
    distance: float
    threshold: Threshold
    probability: float | None = None


@dataclass(frozen=True)
class ServerInfo:
    server_version: str
    api_version: str
    model: ModelInfo
    index_backend: str        # e.g. "faiss 1.15.1"
    gpu: bool                 # whether indexes run on a GPU
    gpu_count: int
    galleries: tuple[str, ...] = ()
    models: tuple[ModelInfo, ...] = ()  # every model the server holds, the default (`model`) first
