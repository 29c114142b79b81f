"""The public methods shared by `Client` (gRPC) and `LocalClient` (in-process).

`BaseClient` turns what a caller passes into canonical form once (see `twinsearch.client.inputs`) and
calls a small set of primitives that each client implements: the remote one over gRPC, the local one
on the engine directly. Both return the dataclasses of `twinsearch.client.types` and raise the
exceptions of `twinsearch.client.errors`, so code written against one runs against the other.

Conventions of every method:
- wherever an image goes: a path, bytes, a PIL image or a numpy array (H x W or H x W x C); where a
  vector may replace it (enroll, identify, verify, verify_class, search): a 1-D numpy array, and for
  many vectors an (n, dim) float matrix (a 2-D float array as wide as the model's dimension is read as
  n vectors, not as one image; the dimension is asked of the server once, when such an array comes);
- wherever a list goes a single item works too, and then the answer is a single result, not a list;
- distances are Euclidean between L2-normalised embeddings, in [0, 2], smaller = more alike;
- an error about one input names it by position and, when the caller gave a path (or a PIL image
  opened from a file), by that name too: "probes[1] (scans/b.png): cannot identify the image format".
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from twinsearch.client import types as t
from twinsearch.client.errors import AlreadyExists, InvalidArgument
from twinsearch.client.inputs import (
    as_batch,
    broadcast,
    enroll_items,
    in_caller_order,
    matrix_hint,
    may_be_vectors,
    name_input,
    naming_inputs,
    payload,
    payloads,
    text,
)
from twinsearch.client.types import EnrollItem, Payload

FIND_BATCH = 1000  # client ids per FindItems call (a server takes up to its max_batch, 1,024 by default)
INT32_MAX = 2**31 - 1  # the wire's k, mean_k and page_size are int32
ID_MAX = 2**63 - 1    # stored ids are positive int64


def parse_index(index: t.IndexSpec | t.IndexKind | str | None, params: Mapping[str, int] | None = None) -> t.IndexSpec:
    """An IndexSpec from a kind name ("exact", "ivf", "hnsw"), an IndexKind or an IndexSpec, plus params;
    InvalidArgument for an unknown kind or parameter, or a parameter the wire's int32 cannot carry."""
    if isinstance(index, t.IndexSpec):
        _index_kind(index.kind)
        spec = index
    else:
        spec = t.IndexSpec(kind=_index_kind(index or t.IndexKind.EXACT))
    fields = [name for name in t.IndexSpec.__dataclass_fields__ if name != "kind"]
    if params:
        unknown = set(params) - set(fields)
        if unknown:
            raise InvalidArgument(f"unknown index parameters {sorted(unknown)}; known: {sorted(fields)}")
        spec = t.IndexSpec(**{**spec.__dict__, **params})
    for field in fields:
        value = getattr(spec, field)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= INT32_MAX:
            raise InvalidArgument(f"index {field} must be an integer from 0 to {INT32_MAX}, got {value!r}",
                                  field=f"params.{field}")
    return spec


def _index_kind(value: object) -> t.IndexKind:
    """`value` as an IndexKind; InvalidArgument naming the kinds there are otherwise."""
    try:
        return t.IndexKind(value)
    except ValueError:
        raise InvalidArgument(
            f"unknown index kind {value!r}; choose from {', '.join(k.value for k in t.IndexKind)}"
        ) from None


def parse_scoring(value: t.Scoring | str | None) -> t.Scoring | None:
    if value is None:
        return None
    try:
        return t.Scoring(value)
    except ValueError:
        raise InvalidArgument(
            f"unknown scoring {value!r}; choose from {', '.join(s.value for s in t.Scoring)}"
        ) from None


def positive_int(value: object, what: str, *, optional: bool = False) -> int | None:
    """`value` as an int from 1 to 2^31 - 1 (None passes when `optional`); InvalidArgument otherwise. Checked
    here so that the remote client never hands the wire a number it cannot encode."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= INT32_MAX:
        raise InvalidArgument(f"{what} must be an integer from 1 to {INT32_MAX}, got {value!r}", field=what)
    return int(value)


def stored_id(value: object, what: str) -> int:
    """`value` as a stored id (an int from 1 to 2^63 - 1); InvalidArgument otherwise: no item has another."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= ID_MAX:
        raise InvalidArgument(f"{what} must be a stored id, an integer from 1 to {ID_MAX}, got {value!r}", field=what)
    return int(value)


def label_list(labels: str | Sequence[str] | None) -> list[str] | None:
    """None, or a list of labels (one label given as a string is one label, not its characters), each
    checked by `text`."""
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = [labels]
    elif not isinstance(labels, Iterable):
        raise InvalidArgument(f"labels must be a label or a list of labels, got {type(labels).__name__}",
                              field="labels")
    return [text(label, f"labels[{i}]") for i, label in enumerate(labels)]


def optional_text(value: object, what: str) -> str | None:
    """None for None or "" (a model name left to the server's default), else `value` checked by `text`."""
    return None if value is None else text(value, what) or None


def flag(value: object, what: str) -> bool:
    """`value` when it is True or False; InvalidArgument otherwise (a string such as "no" is not False)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(f"{what} must be True or False, got {value!r}", field=what)
    return bool(value)


def number(value: object, field: str) -> float | None:
    """None, or `value` as a float when it is a number (numpy's too, not a bool); InvalidArgument otherwise:
    a threshold before the server checks its range, the same from both clients."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{field} must be a number, got {value!r}", field=field)
    return float(value)


class BaseClient(abc.ABC):
    """The twinsearch API. Subclasses implement the `_primitives`; callers use the public methods."""

    _model_dim: int | None = None
    # Most bytes one request may carry (a remote client's gRPC message limit); None: no limit.
    max_request_bytes: int | None = None

    def _dim_for(self, obj: object, gallery: str | None = None, model: str | None = None) -> int | None:
        """The dimension of the vectors that may stand for `obj` when it may be a matrix of vectors, else
        None: the gallery's (asked each time: a migration may change it), or the model's (the default
        model's asked once, then kept)."""
        if not may_be_vectors(obj):
            return None
        if gallery is not None:
            return int(self._get_gallery(gallery).dim)
        if model:
            dims = {m.name: m.dim for m in self._info().models}
            return int(dims[model]) if model in dims else None
        if self._model_dim is None:
            self._model_dim = int(self._info().model.dim)
        return self._model_dim

    def _batch(self, obj: object, gallery: str | None = None, model: str | None = None) -> tuple[list, bool]:
        """`inputs.as_batch` where vectors may replace images: an (n, dim) float matrix is n vectors."""
        return as_batch(obj, self._dim_for(obj, gallery, model))

    # -------------------------------------------------------------------------- server and model

    def info(self) -> t.ServerInfo:
        """Server and model facts: versions, every model (`models`, the default first, also `model`)
        with its fingerprint, dimension and thresholds, the galleries."""
        return self._info()

    def embed(self, images, *, model: str | None = None) -> np.ndarray:
        """Embed images with the server's default model, or the one named `model`: float32 (n, dim) for
        a list, (dim,) for one image.

        Rows are L2-normalised; pass them back as vectors to enroll, identify, verify or search (on a
        gallery bound to the same model). InvalidArgument for a model the server does not hold.
        """
        model = optional_text(model, "model")
        batch, single = as_batch(images)
        with naming_inputs({"images": batch}):
            vectors = self._embed(payloads(batch), model=model)
        return vectors[0] if single else vectors

    def verify(self, a, b, *, threshold: float | None = None, target_far: float | None = None,
               model: str | None = None):
        """Are `a` and `b` the same class? Images or vectors; or two equal-length lists, compared pairwise.

        Returns a Verification (same, distance, threshold used, calibrated probability), or a list of
        them for lists. `threshold` (a distance) or `target_far` (a false-accept rate) overrides the
        model's default operating point. `model`: the model that embeds and decides (default: the
        server's default model).
        """
        model = optional_text(model, "model")
        threshold, target_far = number(threshold, "threshold"), number(target_far, "target_far")
        left, single_a = self._batch(a, model=model)
        right, single_b = self._batch(b, model=model)
        if single_a != single_b or len(left) != len(right):
            hint = matrix_hint(left if single_a else right, self._model_dim)
            raise InvalidArgument(f"verify takes two images, or two lists of the same length{hint}")
        pairs = [(payload(x, f"pairs[{i}].a"), payload(y, f"pairs[{i}].b"))
                 for i, (x, y) in enumerate(zip(left, right, strict=True))]
        if not pairs:
            raise InvalidArgument("no pairs given")
        with naming_inputs({"pairs.a": left, "pairs.b": right}):
            results = self._verify(pairs, threshold=threshold, target_far=target_far, model=model)
        return results[0] if single_a else results

    # ------------------------------------------------------------------------------- galleries

    def create_gallery(
        self,
        name: str,
        *,
        index: t.IndexSpec | t.IndexKind | str = "exact",
        scoring: t.Scoring | str = "nearest",
        mean_k: int | None = None,
        threshold: float | str | None = None,
        params: Mapping[str, int] | None = None,
        exist_ok: bool = False,
        model: str | None = None,
        keep_images: bool | None = None,
        cohort_threshold: float | None = None,
    ) -> t.GalleryInfo:
        """Create a gallery bound to the server's default model, or to the model named `model`.

        `index`: "exact" (default), "ivf" or "hnsw", or an IndexSpec; `params` sets IndexSpec fields
        (nlist, nprobe, hnsw_m, ef_construction, ef_search). `scoring`: how a probe's distance to a class
        is computed by default ("nearest", "prototype" or "mean_of_k" with `mean_k`). `threshold`: a
        distance overriding the model's default threshold for this gallery, or the name of one of the
        model's calibrated operating points ("eer", "far_1", "far_0_1"; see `operating_point`), which
        is resolved to its distance now: the gallery keeps that distance. With `exist_ok`, an
        existing gallery of that name is returned as it is instead of raising AlreadyExists.
        `keep_images`: keep each enrolled image beside the store, so that the gallery can later be
        migrated to another model (`migrate_gallery`); None: the server's default (on).
        `cohort_threshold`: the threshold of `verify_class(..., cohort=True)` calls that give none (a
        cohort score, measured on held-out classes in a gallery of about this one's size); None: such
        calls must give their own. Migrating the gallery to another model drops it, as it drops
        `threshold`.
        """
        name, model = text(name, "name"), optional_text(model, "model")
        spec = parse_index(index, params)
        mean_k = positive_int(mean_k, "mean_k", optional=True)
        if isinstance(threshold, str):
            threshold = self.operating_point(threshold, model=model).distance
        threshold, cohort_threshold = number(threshold, "threshold"), number(cohort_threshold, "cohort_threshold")
        keep_images = None if keep_images is None else flag(keep_images, "keep_images")
        try:
            return self._create_gallery(name, index=spec, scoring=parse_scoring(scoring), mean_k=mean_k,
                                        threshold=threshold, model=model, keep_images=keep_images,
                                        cohort_threshold=cohort_threshold)
        except AlreadyExists:
            if exist_ok:
                return self._get_gallery(name)
            raise

    def operating_point(self, name: str, *, model: str | None = None) -> t.OperatingPoint:
        """The calibrated operating point `name` ("eer", "far_1" for a false-accept rate of 1%,
        "far_0_1" for 0.1%) of the server's default model, or of the model named `model`: its distance
        and the rates measured at it.

        InvalidArgument for a name the model's calibration does not have (or a model without one), or
        a model the server does not hold.
        """
        model = optional_text(model, "model")
        info = self._info()
        chosen = info.model
        if model:
            by_name = {m.name: m for m in info.models}
            if model not in by_name:
                raise InvalidArgument(f"the server holds no model named {model!r}; it holds "
                                      f"{', '.join(by_name) or 'none'}")
            chosen = by_name[model]
        points = {p.name: p for p in chosen.thresholds}
        if name not in points:
            known = ", ".join(points) if points else "none: the model carries no calibration"
            raise InvalidArgument(f"no operating point {name!r} in the server's model; it has {known}")
        return points[name]

    def get_gallery(self, name: str) -> t.GalleryInfo:
        """A gallery's settings and counts; NotFound for an unknown name."""
        return self._get_gallery(text(name, "name"))

    def update_gallery(self, name: str, *, threshold: float | str | None = t.KEEP,
                       cohort_threshold: float | None = t.KEEP, scoring: t.Scoring | str | None = None,
                       mean_k: int | None = None) -> t.GalleryInfo:
        """Change a gallery's decision settings; what is not given is kept (`t.KEEP`). `threshold`: a new
        threshold override (a distance, or the name of one of its model's operating points, resolved
        now as in `create_gallery`), or None to drop it (the model's default applies again).
        `cohort_threshold`: a new default threshold of its cohort-normalized `verify_class` calls, or None
        to drop it. `scoring` and `mean_k`: its new default class scoring. The gallery with its new
        settings; NotFound for an unknown name, FailedPrecondition while it migrates to another model."""
        name = text(name, "name")
        if isinstance(threshold, str):
            threshold = self.operating_point(threshold, model=self._get_gallery(name).model).distance
        if threshold is not t.KEEP:
            threshold = number(threshold, "threshold")
        if cohort_threshold is not t.KEEP:
            cohort_threshold = number(cohort_threshold, "cohort_threshold")
        return self._update_gallery(name, threshold=threshold, cohort_threshold=cohort_threshold,
                                    scoring=parse_scoring(scoring), mean_k=positive_int(mean_k, "mean_k", optional=True))

    def galleries(self) -> list[t.GalleryInfo]:
        """All galleries with their settings and counts."""
        return self._list_galleries()

    def gallery_page(self, *, page_size: int | None = None, page_token: str = "") -> t.GalleryPage:
        """One page of `galleries`, by name (`page_size` None: every gallery in one page); pass
        `next_page_token` back for the next one (empty on the last)."""
        page_size = positive_int(page_size, "page_size", optional=True)
        return self._gallery_page(page_size=page_size, page_token=text(page_token, "page_token"))

    def delete_gallery(self, name: str) -> int:
        """Delete a gallery and everything in it; returns the number of items deleted."""
        return self._delete_gallery(text(name, "name"))

    def migrate_gallery(self, name: str, model: str) -> t.MigrationStart:
        """Start moving gallery `name` to the model named `model`, in the background.

        Every item is embedded again from its kept image with the new model while the gallery keeps
        answering with its current one; enrollments and deletions made meanwhile apply to both, and
        when every item is done the gallery switches to the new model at once. Follow it with
        `get_gallery(name).migration` (None once switched). The gallery's threshold override, if any,
        is dropped at the switch: `MigrationStart.dropped_threshold` says which. FailedPrecondition for a
        gallery that does not keep its images; InvalidArgument for a model the server does not hold.
        Asking again for the migration in progress returns it; `cancel_migration` stops it.
        """
        return self._migrate_gallery(text(name, "name"), optional_text(model, "model"))

    def cancel_migration(self, name: str) -> t.GalleryInfo:
        """Stop gallery `name`'s migration (running, waiting for its model, or failed) and drop the vectors
        it made: the gallery stays bound to its model with its items and thresholds, as if it had never
        started. Returns the gallery. NotFound for an unknown name; FailedPrecondition when it has no
        migration (one that completed has switched it already)."""
        return self._cancel_migration(text(name, "name"))

    # ---------------------------------------------------------------------------- enroll, delete

    def enroll(
        self,
        gallery: str,
        label: str | Sequence[str],
        images,
        ids: str | Sequence[str | None] | None = None,
        metadata: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
        *,
        skip_invalid: bool = False,
    ) -> t.EnrollResult:
        """Enroll images (or vectors: 1-D arrays, or the rows of an (n, dim) float matrix) under `label`
        (one label for all, or one per image).

        `ids` are client ids, one per image: re-sending an id already stored stores nothing new
        (`Enrolled.created` is False), so enrolling with ids is safe to repeat. An id names one image:
        sent again with another image (other bytes or pixels; vectors are not compared) it raises
        AlreadyExists, or with `skip_invalid` that item is listed in `failed`. `metadata` is one
        string-to-string dict for all items or one per item; Search returns it. All-or-nothing unless
        `skip_invalid`, which stores the valid items and lists the others in `EnrollResult.failed`.
        Returns the stored items in order; `result.ids` are their stored ids.
        """
        gallery, skip_invalid = text(gallery, "gallery"), flag(skip_invalid, "skip_invalid")
        dim = self._dim_for(images, gallery)
        batch, _ = as_batch(images, dim)
        # With skip_invalid, an item that fails here (a file that cannot be read) fails alone, as one the
        # server cannot decode does: it is not sent, and its failure takes its place among the server's.
        local: dict[int, t.EnrollFailure] = {}
        items = enroll_items(label, batch, ids, metadata, dim=dim, failed=local if skip_invalid else None)
        positions = [i for i in range(len(batch)) if i not in local]
        if items:
            with naming_inputs({"items": batch}, positions):
                result = self._enroll(gallery, items, skip_invalid=skip_invalid)
        else:
            self.get_gallery(gallery)  # nothing to send: an unknown gallery is still an error
            result = t.EnrollResult(stored=())
        if not result.failed and not local:
            return result
        named = [t.EnrollFailure(index=positions[f.index], client_id=f.client_id,
                                 reason=name_input(f.reason, {"items": batch}, positions)) for f in result.failed]
        return t.EnrollResult(stored=result.stored, failed=tuple(sorted([*named, *local.values()], key=lambda f: f.index)))

    def enroll_folder(
        self,
        gallery: str,
        folder: str | Path | Sequence[str | Path],
        *,
        class_depth: int = 1,
        batch_size: int | None = None,
        max_batch_bytes: int | None = None,
        max_in_flight: int = 4,
        id_prefix: str = "",
        extensions: Sequence[str] | None = None,
        progress: Callable[..., None] | None = None,
    ):
        """Bulk-enroll a folder tree, one folder per class (see `twinsearch.client.bulk`), or several
        trees in one run (then ids and reported paths start with each folder's name).

        Returns a `BulkReport`: files found, sent, stored, skipped (already stored), failed (with
        reasons), seconds and images/s. Resumable: client ids are the files' relative paths, so a
        re-run stores only what is missing. `batch_size` images per request (default 256), fewer
        when their files would pass `max_batch_bytes` together (default 16 MiB).
        """
        from twinsearch.client.bulk import enroll_folder, file_limit

        return enroll_folder(self, text(gallery, "gallery"), folder, class_depth=class_depth, batch_size=batch_size,
                             max_batch_bytes=max_batch_bytes, max_file_bytes=file_limit(self.max_request_bytes),
                             max_in_flight=max_in_flight, id_prefix=id_prefix, extensions=extensions,
                             progress=progress)

    def find_items(self, gallery: str, client_ids: str | Sequence[str]) -> list[t.Enrolled]:
        """The items of `client_ids` that `gallery` stores already (`created` False), in the order
        given (each once); client ids not stored are left out. Any number of ids: FIND_BATCH per call.

        A plain read, for skipping the work of items already stored before enrolling them; it may be
        out of date by the time the caller acts on it (enrolling stays the authority)."""
        gallery = text(gallery, "gallery")
        given = [client_ids] if isinstance(client_ids, str) else list(client_ids)
        cid_list = list(dict.fromkeys(text(c, f"client_ids[{i}]") for i, c in enumerate(given)))
        out: list[t.Enrolled] = []
        for start in range(0, len(cid_list), FIND_BATCH):
            out.extend(self._find_items(gallery, cid_list[start:start + FIND_BATCH]))
        return out

    def delete(
        self,
        gallery: str,
        ids: int | Sequence[int] = (),
        *,
        client_ids: str | Sequence[str] = (),
        label: str | None = None,
    ) -> int:
        """Delete items by stored id or client id, or a whole class by `label`; returns how many went.

        Unknown ids are not an error; an id no item can have (not from 1 to 2^63 - 1) is InvalidArgument, and
        an unknown label is NotFound.
        """
        id_list = [ids] if isinstance(ids, (int, np.integer)) else list(ids)
        cid_list = [client_ids] if isinstance(client_ids, str) else list(client_ids)
        if not id_list and not cid_list and label is None:
            raise InvalidArgument("give ids, client_ids or a label to delete")
        return self._delete(text(gallery, "gallery"), ids=[stored_id(x, f"ids[{i}]") for i, x in enumerate(id_list)],
                            client_ids=[text(c, f"client_ids[{i}]") for i, c in enumerate(cid_list)],
                            label=None if label is None else text(label, "label"))

    def classes(self, gallery: str, *, page_size: int = 1000) -> list[t.ClassCount]:
        """Every enrolled class of a gallery with its item count, ordered by label (all pages)."""
        gallery, page_size = text(gallery, "gallery"), positive_int(page_size, "page_size")
        out: list[t.ClassCount] = []
        token = ""
        while True:
            page = self._list_classes(gallery, page_size=page_size, page_token=token)
            out.extend(page.classes)
            token = page.next_page_token
            if not token:
                return out

    def class_page(self, gallery: str, *, page_size: int | None = None, page_token: str = "") -> t.ClassPage:
        """One page of `classes` (`page_size` None: the server's default); pass `next_page_token` back for
        the next one (empty on the last)."""
        page_size = positive_int(page_size, "page_size", optional=True)
        return self._list_classes(text(gallery, "gallery"), page_size=page_size,
                                  page_token=text(page_token, "page_token"))

    # ----------------------------------------------------------------------------------- queries

    def identify(
        self,
        gallery: str,
        probes,
        *,
        k: int | None = None,
        scoring: t.Scoring | str | None = None,
        mean_k: int | None = None,
        threshold: float | None = None,
        target_far: float | None = None,
        labels: str | Sequence[str] | None = None,
        skip_invalid: bool = False,
    ):
        """Which enrolled class is each probe (image or vector), or unknown (open set)?

        Returns an Identification per probe (one for a single probe): `label` (None for unknown),
        `candidates` (up to k classes, smallest class distance first), the threshold used and the
        margin between the first two. `scoring`/`mean_k` override the gallery's; `threshold` or
        `target_far` the default threshold; `labels` restricts the answer to those classes.

        A bad probe (unreadable file, undecodable image, bad vector) fails the whole call with an
        InvalidArgument naming it (ResourceExhausted for an image over the pixel limit), as before.
        With `skip_invalid` (as in `enroll`), the other probes are answered and each bad one gets a
        `ProbeFailure` (its index and the reason) in its place in the list.
        """
        gallery, skip_invalid = text(gallery, "gallery"), flag(skip_invalid, "skip_invalid")
        threshold, target_far = number(threshold, "threshold"), number(target_far, "target_far")
        labels = label_list(labels)
        batch, single = self._batch(probes, gallery)
        k = positive_int(k, "k", optional=True)
        mean_k = positive_int(mean_k, "mean_k", optional=True)
        if not batch:
            raise InvalidArgument("no probes given")
        sent, positions, failures = [], [], {}
        for i, x in enumerate(batch):
            try:
                sent.append(payload(x, f"probes[{i}]"))
                positions.append(i)
            except InvalidArgument as exc:
                if not skip_invalid:
                    raise
                failures[i] = t.ProbeFailure(index=i, reason=exc.details)
        results = []
        if sent:
            with naming_inputs({"probes": batch}, positions):
                results = self._identify(
                    gallery, sent, k=k, scoring=parse_scoring(scoring), mean_k=mean_k, threshold=threshold,
                    target_far=target_far, labels=labels, skip_invalid=skip_invalid,
                )
        results = in_caller_order(len(batch), failures, positions, results, {"probes": batch})
        return results[0] if single else results

    def verify_class(
        self,
        gallery: str,
        probes,
        labels: str | Sequence[str],
        *,
        scoring: t.Scoring | str | None = None,
        mean_k: int | None = None,
        threshold: float | None = None,
        target_far: float | None = None,
        cohort: bool = False,
    ):
        """Is each probe the enrolled class named beside it? One label for all probes or one per probe.

        Uses the same class distance as identify. NotFound when a label is not enrolled.

        `cohort=True` divides each class distance by the fourth root of the probe's distance to the nearest
        *other* enrolled class (the gallery needs two classes or more): a probe near many classes is judged
        more strictly. On the signature writers it rejects other writers' signatures far better (README,
        Signatures). That score is not on the model's distance scale, so the call must give `threshold`
        for it, unless the gallery was created with a `cohort_threshold` (measure one with `twinsearch
        evaluate --references R --cohort` on held-out classes); the answer's `distance` is the score and
        it has no probability.
        """
        gallery = text(gallery, "gallery")
        threshold, target_far = number(threshold, "threshold"), number(target_far, "target_far")
        batch, single = self._batch(probes, gallery)
        mean_k = positive_int(mean_k, "mean_k", optional=True)
        cohort = flag(cohort, "cohort")
        per_probe = broadcast(labels, len(batch), "labels", matrix_hint(batch, self._model_dim))
        queries = [(payload(x, f"queries[{i}].probe"), text(per_probe[i], f"queries[{i}].label"))
                   for i, x in enumerate(batch)]
        if not queries:
            raise InvalidArgument("no probes given")
        with naming_inputs({"queries.probe": batch}):
            results = self._verify_class(gallery, queries, scoring=parse_scoring(scoring), mean_k=mean_k,
                                         threshold=threshold, target_far=target_far, cohort=cohort)
        return results[0] if single else results

    def search(self, gallery: str, probes, *, k: int | None = None, labels: str | Sequence[str] | None = None):
        """The k nearest stored items of each probe, nearest first: a list of Neighbor per probe
        (one list for a single probe). `labels` restricts the search to those classes."""
        gallery, labels = text(gallery, "gallery"), label_list(labels)
        batch, single = self._batch(probes, gallery)
        k = positive_int(k, "k", optional=True)
        with naming_inputs({"probes": batch}):
            results = self._search(gallery, payloads(batch, "probes"), k=k, labels=labels)
        return results[0] if single else results

    # ------------------------------------------------------------------------------- lifecycle

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection (remote) or the engine (local)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- primitives (per transport)

    @abc.abstractmethod
    def _info(self) -> t.ServerInfo: ...

    @abc.abstractmethod
    def _embed(self, images: list[Payload], *, model: str | None) -> np.ndarray: ...

    @abc.abstractmethod
    def _verify(self, pairs: list[tuple[Payload, Payload]], *, threshold, target_far,
                model: str | None) -> list[t.Verification]: ...

    @abc.abstractmethod
    def _create_gallery(self, name: str, *, index: t.IndexSpec, scoring: t.Scoring | None, mean_k: int,
                        threshold: float | None, model: str | None, keep_images: bool | None,
                        cohort_threshold: float | None) -> t.GalleryInfo: ...

    @abc.abstractmethod
    def _migrate_gallery(self, name: str, model: str) -> t.MigrationStart: ...

    @abc.abstractmethod
    def _cancel_migration(self, name: str) -> t.GalleryInfo: ...

    @abc.abstractmethod
    def _update_gallery(self, name: str, *, threshold, cohort_threshold, scoring: t.Scoring | None,
                        mean_k: int | None) -> t.GalleryInfo: ...

    @abc.abstractmethod
    def _get_gallery(self, name: str) -> t.GalleryInfo: ...

    @abc.abstractmethod
    def _list_galleries(self) -> list[t.GalleryInfo]: ...

    @abc.abstractmethod
    def _gallery_page(self, *, page_size: int | None, page_token: str) -> t.GalleryPage: ...

    @abc.abstractmethod
    def _delete_gallery(self, name: str) -> int: ...

    @abc.abstractmethod
    def _enroll(self, gallery: str, items: list[EnrollItem], *, skip_invalid: bool) -> t.EnrollResult: ...

    @abc.abstractmethod
    def _enroll_batches(self, gallery: str, batches: Iterator[list[EnrollItem]], *,
                        max_in_flight: int) -> Iterator[tuple[list[EnrollItem], t.EnrollResult]]:
        """Enroll each batch with skip_invalid, at most `max_in_flight` awaiting acknowledgement;
        yield (the batch's items, its result) per batch, in the order the batches were taken."""

    @abc.abstractmethod
    def _find_items(self, gallery: str, client_ids: list[str]) -> list[t.Enrolled]: ...

    @abc.abstractmethod
    def _delete(self, gallery: str, *, ids: list[int], client_ids: list[str], label: str | None) -> int: ...

    @abc.abstractmethod
    def _list_classes(self, gallery: str, *, page_size: int, page_token: str) -> t.ClassPage: ...

    @abc.abstractmethod
    def _identify(self, gallery: str, probes: list[Payload], *, k, scoring, mean_k, threshold, target_far,
                  labels, skip_invalid: bool) -> list[t.Identification | t.ProbeFailure]:
        """One answer per probe, in order; with `skip_invalid` a bad probe's is a ProbeFailure naming
        it by its position among `probes`."""

    @abc.abstractmethod
    def _verify_class(self, gallery: str, queries: list[tuple[Payload, str]], *, scoring, mean_k, threshold,
                      target_far, cohort: bool) -> list[t.Verification]: ...

    @abc.abstractmethod
    def _search(self, gallery: str, probes: list[Payload], *, k, labels) -> list[list[t.Neighbor]]: ...
