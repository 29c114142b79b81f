"""Requests parsed once, at the engine boundary, into checked, frozen query objects.

Each `parse_*` function checks what a caller passed against one `Limits` and fills what it left out
from one `Defaults` (`limits.py`), raising InvalidArgument (with the field that was wrong) or
ResourceExhausted. What it returns is hashable, so the options of a query double as the key under
which the search batcher gathers concurrent queries (`SearchKey`); deeper layers take these objects
as given. Error messages name the item ("items[3]: ...", "labels[0]: ...").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from twinsearch.client.errors import InvalidArgument
from twinsearch.client.types import EnrollItem, Scoring

from .limits import DEFAULTS, Defaults, Limits
from .validation import check_k, check_label, check_target_far, check_threshold


@dataclass(frozen=True)
class ThresholdChoice:
    """At most one of an explicit distance threshold (in [0, 2]) and a target false-accept rate (in
    (0, 1]); neither: the gallery's override or the model's default operating point decides."""

    threshold: float | None = None
    target_far: float | None = None


@dataclass(frozen=True)
class IdentifyQuery:
    op: ClassVar[str] = "identify"
    k: int
    scoring: Scoring | None      # None: the gallery's
    mean_k: int | None           # None: the gallery's
    labels: tuple[str, ...] | None  # restrict the answer to these classes; None: all
    decision: ThresholdChoice


@dataclass(frozen=True)
class VerifyClassQuery:
    op: ClassVar[str] = "verify_class"
    scoring: Scoring | None
    mean_k: int | None
    decision: ThresholdChoice
    cohort: bool = False  # cohort-normalized scores (`references.cohort_normalized`): decision.threshold,
    # else the gallery's cohort threshold


@dataclass(frozen=True)
class SearchQuery:
    op: ClassVar[str] = "search"
    k: int
    labels: tuple[str, ...] | None


@dataclass(frozen=True)
class PageQuery:
    """One page of a listing: `size` entries (None: all) after the one the token names (empty: the
    first page)."""

    size: int | None
    token: str


@dataclass(frozen=True)
class SearchKey:
    """What concurrent gallery queries must share to be searched together: the gallery, the model its
    vectors come from, and every option of the query."""

    gallery: str
    model: str
    query: IdentifyQuery | VerifyClassQuery | SearchQuery

    @property
    def op(self) -> str:
        return self.query.op


def parse_threshold(threshold: object, target_far: object) -> ThresholdChoice:
    threshold = check_threshold(threshold)
    if threshold is not None and target_far is not None:
        raise InvalidArgument("give a threshold or a target false-accept rate, not both", field="threshold")
    return ThresholdChoice(threshold, check_target_far(target_far))


def parse_scoring(scoring: object) -> Scoring | None:
    if scoring is None:
        return None
    try:
        return Scoring(scoring)
    except ValueError as exc:
        raise InvalidArgument(str(exc), field="scoring") from exc


def parse_mean_k(mean_k: object, limits: Limits) -> int | None:
    """None (the gallery's) for None or 0, else mean_k checked against `limits.max_k`."""
    mean_k = mean_k or None
    return None if mean_k is None else check_k(mean_k, limits.max_k, "mean_k")


def parse_labels(labels: Sequence[str] | None) -> tuple[str, ...] | None:
    """A label restriction: None for none (or an empty one), else the checked labels."""
    if labels is None:
        return None
    if isinstance(labels, str):
        raise InvalidArgument("labels must be a list of labels, not one string", field="labels")
    labels = tuple(labels)
    for i, label in enumerate(labels):
        check_label(label, where=f"labels[{i}]: ", field=f"labels[{i}]")
    return labels or None


def parse_identify(k: int | None, scoring: object, mean_k: object, threshold: object, target_far: object,
                   labels: Sequence[str] | None, limits: Limits, defaults: Defaults = DEFAULTS) -> IdentifyQuery:
    return IdentifyQuery(k=check_k(defaults.identify_k if k is None or k == 0 else k, limits.max_k),
                         scoring=parse_scoring(scoring), mean_k=parse_mean_k(mean_k, limits),
                         labels=parse_labels(labels), decision=parse_threshold(threshold, target_far))


def parse_verify_class(queries: Sequence[object], scoring: object, mean_k: object, threshold: object,
                       target_far: object, limits: Limits, cohort: object = False) -> VerifyClassQuery:
    """The options of a verify_class call; each of `queries` must be (probe, label)."""
    limits.check_count(len(queries), "queries")
    for i, query in enumerate(queries):
        if not isinstance(query, (tuple, list)) or len(query) != 2:
            raise InvalidArgument(f"queries[{i}]: a query is (probe, label)", field=f"queries[{i}]")
        check_label(query[1], where=f"queries[{i}]: ", field=f"queries[{i}].label")
    if not isinstance(cohort, bool):
        raise InvalidArgument(f"cohort must be true or false, got {cohort!r}", field="cohort")
    decision = parse_threshold(threshold, target_far)
    if cohort and decision.target_far is not None:
        raise InvalidArgument(
            "a cohort-normalized score is not on the model's distance scale, so neither the model's calibrated "
            "thresholds nor a target false-accept rate nor the gallery's distance threshold apply to it: give a "
            "threshold for it, or create the gallery with a cohort threshold (twinsearch evaluate --references R "
            "--cohort on held-out classes prints the equal-error ones)", field="target_far")
    return VerifyClassQuery(scoring=parse_scoring(scoring), mean_k=parse_mean_k(mean_k, limits),
                            decision=decision, cohort=cohort)


def parse_search(k: int | None, labels: Sequence[str] | None, limits: Limits,
                 defaults: Defaults = DEFAULTS) -> SearchQuery:
    return SearchQuery(k=check_k(defaults.search_k if k is None or k == 0 else k, limits.max_k),
                       labels=parse_labels(labels))


def parse_page(size: int | None, token: str | None, limits: Limits, default: int | None = DEFAULTS.page_size
               ) -> PageQuery:
    """A page of at most `limits.page_size` entries; `size` None or 0: `default` (None: every entry)."""
    if size is None or size == 0:
        size = default
    if size is not None:
        size = check_k(size, limits.page_size, "page_size")
    if token is not None and not isinstance(token, str):
        raise InvalidArgument(f"page_token must be a string, got {type(token).__name__}", field="page_token")
    return PageQuery(size, token or "")


def check_enroll_item(item: object, i: int, seen_ids: dict[str, int], limits: Limits) -> None:
    """InvalidArgument naming items[i] when the item is not an EnrollItem with a valid label, client id
    (at most `limits.client_id_length` characters, not repeating an earlier item's: `seen_ids`) and
    metadata (strings to strings, at most `limits.metadata_bytes` in all)."""
    where = f"items[{i}]: "
    if not isinstance(item, EnrollItem):
        raise InvalidArgument(f"{where}expected an EnrollItem, not {type(item).__name__}", field=f"items[{i}]")
    check_label(item.label, where=where, field=f"items[{i}].label")
    cid = item.client_id or None
    if cid is not None:
        field = f"items[{i}].client_id"
        if not isinstance(cid, str):
            raise InvalidArgument(f"{where}client id must be a string", field=field)
        if len(cid) > limits.client_id_length:
            raise InvalidArgument(f"{where}client id is {len(cid)} characters, at most {limits.client_id_length}",
                                  field=field)
        if cid in seen_ids:
            raise InvalidArgument(f"{where}client id {cid!r} repeats items[{seen_ids[cid]}] of the same batch",
                                  field=field)
        seen_ids[cid] = i
    if item.metadata:
        size = 0
        for key, value in item.metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidArgument(f"{where}metadata must map strings to strings", field=f"items[{i}].metadata")
            size += len(key.encode()) + len(value.encode())
        if size > limits.metadata_bytes:
            raise InvalidArgument(f"{where}metadata is {size} bytes, at most {limits.metadata_bytes}",
                                  field=f"items[{i}].metadata")
