from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ThresholdSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    THRESHOLD_SOURCE_UNSPECIFIED: _ClassVar[ThresholdSource]
    THRESHOLD_SOURCE_MODEL_EER: _ClassVar[ThresholdSource]
    THRESHOLD_SOURCE_MODEL_FAR_1: _ClassVar[ThresholdSource]
    THRESHOLD_SOURCE_MODEL_FAR_0_1: _ClassVar[ThresholdSource]
    THRESHOLD_SOURCE_GALLERY: _ClassVar[ThresholdSource]
    THRESHOLD_SOURCE_REQUEST: _ClassVar[ThresholdSource]
    THRESHOLD_SOURCE_REQUEST_FAR: _ClassVar[ThresholdSource]

class IndexKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_KIND_UNSPECIFIED: _ClassVar[IndexKind]
    INDEX_KIND_EXACT: _ClassVar[IndexKind]
    INDEX_KIND_IVF: _ClassVar[IndexKind]
    INDEX_KIND_HNSW: _ClassVar[IndexKind]

class Scoring(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORING_UNSPECIFIED: _ClassVar[Scoring]
    SCORING_NEAREST: _ClassVar[Scoring]
    SCORING_PROTOTYPE: _ClassVar[Scoring]
    SCORING_MEAN_OF_K: _ClassVar[Scoring]

class MigrationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MIGRATION_STATE_UNSPECIFIED: _ClassVar[MigrationState]
    MIGRATION_STATE_RUNNING: _ClassVar[MigrationState]
    MIGRATION_STATE_PAUSED: _ClassVar[MigrationState]
    MIGRATION_STATE_FAILED: _ClassVar[MigrationState]
THRESHOLD_SOURCE_UNSPECIFIED: ThresholdSource
THRESHOLD_SOURCE_MODEL_EER: ThresholdSource
THRESHOLD_SOURCE_MODEL_FAR_1: ThresholdSource
THRESHOLD_SOURCE_MODEL_FAR_0_1: ThresholdSource
THRESHOLD_SOURCE_GALLERY: ThresholdSource
THRESHOLD_SOURCE_REQUEST: ThresholdSource
THRESHOLD_SOURCE_REQUEST_FAR: ThresholdSource
INDEX_KIND_UNSPECIFIED: IndexKind
INDEX_KIND_EXACT: IndexKind
INDEX_KIND_IVF: IndexKind
INDEX_KIND_HNSW: IndexKind
SCORING_UNSPECIFIED: Scoring
SCORING_NEAREST: Scoring
SCORING_PROTOTYPE: Scoring
SCORING_MEAN_OF_K: Scoring
MIGRATION_STATE_UNSPECIFIED: MigrationState
MIGRATION_STATE_RUNNING: MigrationState
MIGRATION_STATE_PAUSED: MigrationState
MIGRATION_STATE_FAILED: MigrationState

class RawImage(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("data", "dim")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dim: int
    def __init__(self, data: _Optional[bytes] = ..., dim: _Optional[int] = ...) -> None: ...

class Input(_message.Message):
    __slots__ = ("image", "vector")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    image: Image
    vector: Vector
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ...) -> None: ...

class Threshold(_message.Message):
    __slots__ = ("distance", "source", "far")
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FAR_FIELD_NUMBER: _ClassVar[int]
    distance: float
    source: ThresholdSource
    far: float
    def __init__(self, distance: _Optional[float] = ..., source: _Optional[_Union[ThresholdSource, str]] = ..., far: _Optional[float] = ...) -> None: ...

class ThresholdOptions(_message.Message):
    __slots__ = ("threshold", "target_far")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FAR_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    target_far: float
    def __init__(self, threshold: _Optional[float] = ..., target_far: _Optional[float] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InputSpec(_message.Message):
    __slots__ = ("width", "height", "channels")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    channels: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class OperatingPoint(_message.Message):
    __slots__ = ("name", "distance", "far", "frr", "genuine_pairs", "impostor_pairs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    FAR_FIELD_NUMBER: _ClassVar[int]
    FRR_FIELD_NUMBER: _ClassVar[int]
    GENUINE_PAIRS_FIELD_NUMBER: _ClassVar[int]
    IMPOSTOR_PAIRS_FIELD_NUMBER: _ClassVar[int]
    name: str
    distance: float
    far: float
    frr: float
    genuine_pairs: int
    impostor_pairs: int
    def __init__(self, name: _Optional[str] = ..., distance: _Optional[float] = ..., far: _Optional[float] = ..., frr: _Optional[float] = ..., genuine_pairs: _Optional[int] = ..., impostor_pairs: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "fingerprint", "dim", "metric", "input", "thresholds", "default_threshold")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    fingerprint: str
    dim: int
    metric: str
    input: InputSpec
    thresholds: _containers.RepeatedCompositeFieldContainer[OperatingPoint]
    default_threshold: ThresholdSource
    def __init__(self, name: _Optional[str] = ..., fingerprint: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., input: _Optional[_Union[InputSpec, _Mapping]] = ..., thresholds: _Optional[_Iterable[_Union[OperatingPoint, _Mapping]]] = ..., default_threshold: _Optional[_Union[ThresholdSource, str]] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("server_version", "api_version", "model", "index_backend", "gpu", "gpu_count", "galleries", "models")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_BACKEND_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    GALLERIES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    api_version: str
    model: ModelInfo
    index_backend: str
    gpu: bool
    gpu_count: int
    galleries: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, server_version: _Optional[str] = ..., api_version: _Optional[str] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., index_backend: _Optional[str] = ..., gpu: _Optional[bool] = ..., gpu_count: _Optional[int] = ..., galleries: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("images", "model")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    model: str
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("vectors", "model_fingerprint")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    model_fingerprint: str
    def __init__(self, vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class Pair(_message.Message):
    __slots__ = ("a", "b")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    a: Input
    b: Input
    def __init__(self, a: _Optional[_Union[Input, _Mapping]] = ..., b: _Optional[_Union[Input, _Mapping]] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("pairs", "threshold", "model")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[Pair]
    threshold: ThresholdOptions
    model: str
    def __init__(self, pairs: _Optional[_Iterable[_Union[Pair, _Mapping]]] = ..., threshold: _Optional[_Union[ThresholdOptions, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("distance", "same", "threshold", "probability")
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SAME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    distance: float
    same: bool
    threshold: Threshold
    probability: float
    def __init__(self, distance: _Optional[float] = ..., same: _Optional[bool] = ..., threshold: _Optional[_Union[Threshold, _Mapping]] = ..., probability: _Optional[float] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Verification]
    def __init__(self, results: _Optional[_Iterable[_Union[Verification, _Mapping]]] = ...) -> None: ...

class IndexParams(_message.Message):
    __slots__ = ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search")
    NLIST_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    HNSW_M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    nlist: int
    nprobe: int
    hnsw_m: int
    ef_construction: int
    ef_search: int
    def __init__(self, nlist: _Optional[int] = ..., nprobe: _Optional[int] = ..., hnsw_m: _Optional[int] = ..., ef_construction: _Optional[int] = ..., ef_search: _Optional[int] = ...) -> None: ...

class CreateGalleryRequest(_message.Message):
    __slots__ = ("name", "index", "params", "scoring", "mean_k", "threshold", "model", "keep_images", "cohort_threshold")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    MEAN_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEEP_IMAGES_FIELD_NUMBER: _ClassVar[int]
    COHORT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    index: IndexKind
    params: IndexParams
    scoring: Scoring
    mean_k: int
    threshold: float
    model: str
    keep_images: bool
    cohort_threshold: float
    def __init__(self, name: _Optional[str] = ..., index: _Optional[_Union[IndexKind, str]] = ..., params: _Optional[_Union[IndexParams, _Mapping]] = ..., scoring: _Optional[_Union[Scoring, str]] = ..., mean_k: _Optional[int] = ..., threshold: _Optional[float] = ..., model: _Optional[str] = ..., keep_images: _Optional[bool] = ..., cohort_threshold: _Optional[float] = ...) -> None: ...

class Gallery(_message.Message):
    __slots__ = ("name", "model_fingerprint", "dim", "index", "params", "scoring", "mean_k", "threshold", "class_count", "item_count", "on_gpu", "model", "keep_images", "migration", "cohort_threshold")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    MEAN_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLASS_COUNT_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    ON_GPU_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEEP_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    COHORT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_fingerprint: str
    dim: int
    index: IndexKind
    params: IndexParams
    scoring: Scoring
    mean_k: int
    threshold: float
    class_count: int
    item_count: int
    on_gpu: bool
    model: str
    keep_images: bool
    migration: Migration
    cohort_threshold: float
    def __init__(self, name: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., dim: _Optional[int] = ..., index: _Optional[_Union[IndexKind, str]] = ..., params: _Optional[_Union[IndexParams, _Mapping]] = ..., scoring: _Optional[_Union[Scoring, str]] = ..., mean_k: _Optional[int] = ..., threshold: _Optional[float] = ..., class_count: _Optional[int] = ..., item_count: _Optional[int] = ..., on_gpu: _Optional[bool] = ..., model: _Optional[str] = ..., keep_images: _Optional[bool] = ..., migration: _Optional[_Union[Migration, _Mapping]] = ..., cohort_threshold: _Optional[float] = ...) -> None: ...

class Migration(_message.Message):
    __slots__ = ("model", "fingerprint", "done", "total", "state", "error")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model: str
    fingerprint: str
    done: int
    total: int
    state: MigrationState
    error: str
    def __init__(self, model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., state: _Optional[_Union[MigrationState, str]] = ..., error: _Optional[str] = ...) -> None: ...

class MigrateGalleryRequest(_message.Message):
    __slots__ = ("name", "model")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class MigrateGalleryResponse(_message.Message):
    __slots__ = ("gallery", "dropped_threshold", "dropped_cohort_threshold")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    DROPPED_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COHORT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    gallery: Gallery
    dropped_threshold: float
    dropped_cohort_threshold: float
    def __init__(self, gallery: _Optional[_Union[Gallery, _Mapping]] = ..., dropped_threshold: _Optional[float] = ..., dropped_cohort_threshold: _Optional[float] = ...) -> None: ...

class CancelMigrationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetGalleryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListGalleriesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListGalleriesResponse(_message.Message):
    __slots__ = ("galleries", "next_page_token")
    GALLERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    galleries: _containers.RepeatedCompositeFieldContainer[Gallery]
    next_page_token: str
    def __init__(self, galleries: _Optional[_Iterable[_Union[Gallery, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteGalleryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdateGalleryRequest(_message.Message):
    __slots__ = ("name", "threshold", "clear_threshold", "cohort_threshold", "clear_cohort_threshold", "scoring", "mean_k")
    NAME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLEAR_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COHORT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLEAR_COHORT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    MEAN_K_FIELD_NUMBER: _ClassVar[int]
    name: str
    threshold: float
    clear_threshold: bool
    cohort_threshold: float
    clear_cohort_threshold: bool
    scoring: Scoring
    mean_k: int
    def __init__(self, name: _Optional[str] = ..., threshold: _Optional[float] = ..., clear_threshold: _Optional[bool] = ..., cohort_threshold: _Optional[float] = ..., clear_cohort_threshold: _Optional[bool] = ..., scoring: _Optional[_Union[Scoring, str]] = ..., mean_k: _Optional[int] = ...) -> None: ...

class DeleteGalleryResponse(_message.Message):
    __slots__ = ("items_deleted",)
    ITEMS_DELETED_FIELD_NUMBER: _ClassVar[int]
    items_deleted: int
    def __init__(self, items_deleted: _Optional[int] = ...) -> None: ...

class EnrollItem(_message.Message):
    __slots__ = ("label", "input", "client_id", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    label: str
    input: Input
    client_id: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, label: _Optional[str] = ..., input: _Optional[_Union[Input, _Mapping]] = ..., client_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("gallery", "items", "skip_invalid", "sequence")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SKIP_INVALID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    items: _containers.RepeatedCompositeFieldContainer[EnrollItem]
    skip_invalid: bool
    sequence: int
    def __init__(self, gallery: _Optional[str] = ..., items: _Optional[_Iterable[_Union[EnrollItem, _Mapping]]] = ..., skip_invalid: _Optional[bool] = ..., sequence: _Optional[int] = ...) -> None: ...

class EnrolledItem(_message.Message):
    __slots__ = ("id", "client_id", "label", "created")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    id: int
    client_id: str
    label: str
    created: bool
    def __init__(self, id: _Optional[int] = ..., client_id: _Optional[str] = ..., label: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class EnrollFailure(_message.Message):
    __slots__ = ("index", "client_id", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    client_id: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., client_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("items", "failed", "sequence")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EnrolledItem]
    failed: _containers.RepeatedCompositeFieldContainer[EnrollFailure]
    sequence: int
    def __init__(self, items: _Optional[_Iterable[_Union[EnrolledItem, _Mapping]]] = ..., failed: _Optional[_Iterable[_Union[EnrollFailure, _Mapping]]] = ..., sequence: _Optional[int] = ...) -> None: ...

class FindItemsRequest(_message.Message):
    __slots__ = ("gallery", "client_ids")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, gallery: _Optional[str] = ..., client_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class FindItemsResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EnrolledItem]
    def __init__(self, items: _Optional[_Iterable[_Union[EnrolledItem, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("gallery", "ids", "client_ids", "label")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    label: str
    def __init__(self, gallery: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ..., client_ids: _Optional[_Iterable[str]] = ..., label: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class ListClassesRequest(_message.Message):
    __slots__ = ("gallery", "page_size", "page_token")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    page_size: int
    page_token: str
    def __init__(self, gallery: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ClassCount(_message.Message):
    __slots__ = ("label", "count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    count: int
    def __init__(self, label: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ListClassesResponse(_message.Message):
    __slots__ = ("classes", "next_page_token")
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedCompositeFieldContainer[ClassCount]
    next_page_token: str
    def __init__(self, classes: _Optional[_Iterable[_Union[ClassCount, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class IdentifyRequest(_message.Message):
    __slots__ = ("gallery", "probes", "k", "scoring", "mean_k", "threshold", "labels", "skip_invalid")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    MEAN_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SKIP_INVALID_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    probes: _containers.RepeatedCompositeFieldContainer[Input]
    k: int
    scoring: Scoring
    mean_k: int
    threshold: ThresholdOptions
    labels: _containers.RepeatedScalarFieldContainer[str]
    skip_invalid: bool
    def __init__(self, gallery: _Optional[str] = ..., probes: _Optional[_Iterable[_Union[Input, _Mapping]]] = ..., k: _Optional[int] = ..., scoring: _Optional[_Union[Scoring, str]] = ..., mean_k: _Optional[int] = ..., threshold: _Optional[_Union[ThresholdOptions, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., skip_invalid: _Optional[bool] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("label", "distance", "probability", "nearest_ids")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    NEAREST_IDS_FIELD_NUMBER: _ClassVar[int]
    label: str
    distance: float
    probability: float
    nearest_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, label: _Optional[str] = ..., distance: _Optional[float] = ..., probability: _Optional[float] = ..., nearest_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Identification(_message.Message):
    __slots__ = ("known", "label", "candidates", "threshold", "margin")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    label: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    threshold: Threshold
    margin: float
    def __init__(self, known: _Optional[bool] = ..., label: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., threshold: _Optional[_Union[Threshold, _Mapping]] = ..., margin: _Optional[float] = ...) -> None: ...

class ProbeFailure(_message.Message):
    __slots__ = ("index", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class IdentifyResponse(_message.Message):
    __slots__ = ("results", "failed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Identification]
    failed: _containers.RepeatedCompositeFieldContainer[ProbeFailure]
    def __init__(self, results: _Optional[_Iterable[_Union[Identification, _Mapping]]] = ..., failed: _Optional[_Iterable[_Union[ProbeFailure, _Mapping]]] = ...) -> None: ...

class ClassQuery(_message.Message):
    __slots__ = ("probe", "label")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    probe: Input
    label: str
    def __init__(self, probe: _Optional[_Union[Input, _Mapping]] = ..., label: _Optional[str] = ...) -> None: ...

class VerifyClassRequest(_message.Message):
    __slots__ = ("gallery", "queries", "scoring", "mean_k", "threshold", "cohort")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    MEAN_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    queries: _containers.RepeatedCompositeFieldContainer[ClassQuery]
    scoring: Scoring
    mean_k: int
    threshold: ThresholdOptions
    cohort: bool
    def __init__(self, gallery: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[ClassQuery, _Mapping]]] = ..., scoring: _Optional[_Union[Scoring, str]] = ..., mean_k: _Optional[int] = ..., threshold: _Optional[_Union[ThresholdOptions, _Mapping]] = ..., cohort: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("gallery", "probes", "k", "labels")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    probes: _containers.RepeatedCompositeFieldContainer[Input]
    k: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, gallery: _Optional[str] = ..., probes: _Optional[_Iterable[_Union[Input, _Mapping]]] = ..., k: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class Neighbor(_message.Message):
    __slots__ = ("id", "client_id", "label", "distance", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: int
    client_id: str
    label: str
    distance: float
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., client_id: _Optional[str] = ..., label: _Optional[str] = ..., distance: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Neighbors(_message.Message):
    __slots__ = ("neighbors",)
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    def __init__(self, neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Neighbors]
    def __init__(self, results: _Optional[_Iterable[_Union[Neighbors, _Mapping]]] = ...) -> None: ...
