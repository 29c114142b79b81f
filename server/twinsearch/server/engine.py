"""The engine: everything the server does, without a transport.

`Engine.open(data_dir, model_path)` loads the model (or `models=`: several, by name, the first the
default; `models.py`), opens the gallery store and starts two batchers: one gathers the images of
concurrent calls into encoder forward passes, one model at a time (on its own thread, with its own
torch thread count), the other gathers the probes of concurrent queries on the same gallery with
the same options into one gallery search. Every call on a gallery uses the model the gallery is
bound to; a gallery whose model the server does not hold answers FailedPrecondition saying so.
Galleries moving to another model are re-embedded in the background (`migration.py`). The gRPC servicer (`twinsearch.server.service`) and the
in-process client (`twinsearch.client.LocalClient`) both call it, so both give the same answers.

Inputs ("payloads") are what `twinsearch.client.convert.input_from_pb` returns: encoded image bytes, a
pixel array (2-D or 3-D), or a vector (1-D). Vectors skip the encoder; images are embedded with the
server's model. Errors are `twinsearch.client.errors` classes whose details name the item
("probes[3]: ..."). Distances are Euclidean between L2-normalised embeddings, in [0, 2], smaller =
more alike; a pair is "same" when its distance is <= the threshold in force.

Thread-safe: every method may be called from many threads at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from twinsearch.client.base import stored_id
from twinsearch.client.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable
from twinsearch.client.types import (
    KEEP,
    ClassPage,
    Enrolled,
    EnrollFailure,
    EnrollItem,  # one item to enroll; defined beside the other API types, shared with the clients
    EnrollResult,
    GalleryInfo,
    GalleryPage,
    Identification,
    IndexSpec,
    InputSpec,
    MigrationStart,
    MigrationState,
    ModelInfo,
    Neighbor,
    OperatingPoint,
    Payload,
    ProbeFailure,
    Scoring,
    ServerInfo,
    Verification,
)
from twinsearch.client.version import package_version

from . import deadlines
from . import images as kept
from .batching import Batcher
from .limits import DEFAULTS, Limits
from .migration import Migrator
from .models import ModelRegistry, ServedModel, load_models, served
from .payloads import Prepared, prepare
from .queries import (
    IdentifyQuery,
    SearchKey,
    VerifyClassQuery,
    check_enroll_item,
    parse_identify,
    parse_page,
    parse_search,
    parse_threshold,
    parse_verify_class,
)
from .scoring import exact_distances
from .settings import EngineSettings
from .startup import data_folder
from .store import another_image, stored_other_image
from .thresholds import MODEL_SOURCES, ThresholdPolicy
from .validation import ModelChanged, check_threshold

log = logging.getLogger(__name__)

API_VERSION = "v1"
DEFAULT_SETTINGS = EngineSettings()
SWITCH_RETRIES = 3  # a call that meets a gallery switching models is embedded again this many times


@dataclass(frozen=True)
class DecodedEnroll:
    """An enroll batch checked and decoded, not yet embedded (`Engine.decode_enroll`).

    prepared: the images and vectors for the gallery's model; again: the same items for the model the
    gallery is moving to (None when it is not moving); kept_images: the images the gallery keeps, of
    the usable items in order (None when it keeps none); already and failures as in `PendingEnroll`."""

    gallery: str
    items: tuple[EnrollItem, ...]
    skip_invalid: bool
    entry: ServedModel
    target: ServedModel | None
    prepared: Prepared
    again: Prepared | None
    kept_images: list | None
    already: dict[int, Enrolled]
    failures: dict[int, str]
    digests: tuple[bytes | None, ...]


@dataclass(frozen=True)
class PendingEnroll:
    """An enroll batch checked, decoded and embedded, not yet stored (`Engine.embed_enroll`).

    ok: positions of the items to store, with their vectors (and the migration target's) and kept
    images in that order; already: positions whose client id was stored before (from the same image);
    failures: position -> reason for items refused under skip_invalid; digests: each item's image digest
    when it has a client id (`images.payload_digest`)."""

    gallery: str
    items: tuple[EnrollItem, ...]
    skip_invalid: bool
    fingerprint: str
    next_fingerprint: str | None
    ok: tuple[int, ...]
    vectors: np.ndarray | None
    next_vectors: np.ndarray | None
    kept_images: list | None
    already: dict[int, Enrolled]
    failures: dict[int, str]
    digests: tuple[bytes | None, ...]


BatchObserver = Callable[[str, int, int], None]  # (stage, calls gathered, rows)
StageTimer = Callable[[str, float], None]  # (stage, seconds): decode, encoder_queue/_run, search_queue/_run


class Engine:
    """The data plane. Build it with `Engine.open`; close it with `close()` (writes index snapshots)."""

    def __init__(self, model, store, settings: EngineSettings = DEFAULT_SETTINGS, *,
                 observer: BatchObserver | None = None, timer: StageTimer | None = None, encoder=None):
        """`model`: a ModelRegistry, or one model (served under its card's name). `encoder`: what embeds
        the gathered batches instead of the model in this process, an object with
        `embed_arrays(images) -> vectors` (and optionally `replicas`, the batches it takes at once, and
        `close()`), for the default model, or a mapping of such objects by model name; default: none, the
        models embed in this process."""
        self.models = model if isinstance(model, ModelRegistry) else ModelRegistry(
            [served(model.name, model, settings.default_threshold)])
        if encoder is not None and not isinstance(encoder, Mapping):
            encoder = {self.models.default.name: encoder}
        self._remote_encoders: dict[str, Any] = dict(encoder or {})
        self.store = store
        self.settings = settings
        self.limits = Limits.from_settings(settings)  # every request is parsed against these (`queries.py`)
        self.observer = observer
        self.timer = timer
        # Decoding is CPU-bound: more images at once than twice the cores gains nothing and only holds
        # more full-size decoded images in memory.
        self._decode_gate = threading.BoundedSemaphore(max(2, 2 * (os.cpu_count() or 1)))
        self._lock = threading.Condition()
        self._calls = 0
        self._closed = False
        wait_s = settings.batch_wait_ms / 1000.0
        # One search thread: FAISS already spreads one search over every core (OpenMP, BLAS), and two
        # searches at once oversubscribe them (1M x 128 exact, 32 clients on 2 cores: 98 against 59
        # queries/s, one run each, interleaved). One GPU is driven from one thread too.
        # One encoder thread runs the local models (their threads use the cores); remote replicas take
        # one gathered batch each at a time.
        replicas = max([getattr(e, "replicas", 1) for e in self._remote_encoders.values()] + [1])
        self._encoder = Batcher("encoder", self._run_encoder, max_size=settings.encoder_batch, wait_s=wait_s,
                                threads=replicas, on_start=self._encoder_thread_start,
                                observe=lambda key, calls, rows: self._observe("encoder", calls, rows),
                                timer=self._time)
        self._searcher = Batcher("search", self._run_search, max_size=settings.search_batch, wait_s=wait_s,
                                 threads=1, regather=settings.search_regather,
                                 observe=lambda key, calls, rows: self._observe(key.op, calls, rows),
                                 timer=self._time)
        self.migrator = Migrator(self)
        self.startup_notes = self._startup_notes()  # Engine.open logs them; `serve` prints them instead
        for g in self.store.list_galleries():
            if g.migration is not None and g.migration.state != MigrationState.FAILED:
                self.migrator.start(g.name, g.migration.fingerprint)  # resumes; paused when not held

    # ------------------------------------------------------------------ models
    @property
    def model(self):
        """The default model."""
        return self.models.default.model

    @model.setter
    def model(self, value) -> None:
        self.models.replace_model(self.models.default.name, value)

    @property
    def _remote_encoder(self):
        """The default model's remote encoder, None when it embeds in this process."""
        return self._remote_encoders.get(self.models.default.name)

    @property
    def policy(self) -> ThresholdPolicy:
        """The default model's threshold policy."""
        return self.models.default.policy

    def _startup_notes(self) -> list[str]:
        """One line per gallery the server cannot serve (its model is not held) or cannot migrate."""
        notes = []
        for g in self.store.list_galleries():
            if self.models.by_fingerprint(g.model_fingerprint) is None:
                notes.append(_unserved(g))
            m = g.migration
            if m is not None and m.state != MigrationState.FAILED and self.models.by_fingerprint(m.fingerprint) is None:
                notes.append(f"gallery {g.name!r} is moving to model fingerprint {m.fingerprint}, which this server "
                             f"does not hold: the migration waits ({m.done} of {m.total} items done); restart "
                             "with that model (--model NAME=PATH) to resume it")
        return notes

    @classmethod
    def open(cls, data_dir: Path, model_path: Path | None = None, settings: EngineSettings = DEFAULT_SETTINGS,
             *, observer: BatchObserver | None = None, timer: StageTimer | None = None,
             models: Sequence[tuple[str | None, Path | str | None]] | None = None,
             log_notes: bool = True) -> Engine:
        """Load the model (None: the default model shipped with the package), or the `models`
        ((name or None for the card's, path), the first the default), open (or create) the gallery
        store in `data_dir`, catching its indexes up, and start the batchers (and the migrations
        a restart interrupted). `log_notes`: log `startup_notes` as warnings (`serve` prints them itself).

        A data folder that cannot be used (a file, not writable) raises `startup.StartupError` before
        the model loads."""
        import torch

        data_dir = data_folder(data_dir)  # before the model loads: a wrong folder fails at once
        torch.set_num_threads(settings.threads)
        specs = list(models) if models else [(None, model_path)]
        registry = load_models(specs, settings.default_threshold)
        encoders = _remote_encoders(settings, specs, registry) if settings.encoders == "ray" else None
        try:
            store = _open_store(data_dir, settings)
        except BaseException:
            for pool in reversed(list((encoders or {}).values())):
                pool.close()
            raise
        log.info("gallery store at %s open: %d galleries", data_dir, len(store.list_galleries()))
        engine = cls(registry, store, settings, observer=observer, timer=timer, encoder=encoders)
        for note in engine.startup_notes if log_notes else ():
            log.warning("%s", note)
        return engine

    # ------------------------------------------------------------------ life cycle
    @contextmanager
    def _call(self):
        with self._lock:
            if self._closed:
                raise Unavailable("the server is shutting down")
            self._calls += 1
        try:
            yield deadlines.current()
        finally:
            with self._lock:
                self._calls -= 1
                self._lock.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new calls, let running ones finish (up to `timeout` s), stop the batchers, write index
        snapshots and close the store. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._lock.wait_for(lambda: self._calls == 0, timeout):
                log.warning("closing with %d calls still running", self._calls)
        self.migrator.close()  # what they stored is kept; a restart resumes them
        self._encoder.close()
        self._searcher.close()
        for pool in reversed(list(self._remote_encoders.values())):  # the first one started Ray, if any
            if hasattr(pool, "close"):
                pool.close()
        self.store.close()
        log.info("engine closed")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ facts
    def info(self) -> ServerInfo:
        import faiss

        with self._call():
            gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
            return ServerInfo(
                server_version=package_version(),
                api_version=API_VERSION,
                model=self.model_info(),
                models=tuple(self.model_info(m.name) for m in self.models),
                index_backend=f"faiss {faiss.__version__}",
                gpu=getattr(self.store, "gpu", None) is not None,  # whether the store puts indexes on a GPU
                gpu_count=gpus,
                galleries=tuple(g.name for g in self.store.list_galleries()),
            )

    def model_info(self, name: str | None = None) -> ModelInfo:
        """Facts of the model named `name` (None: the default model)."""
        entry = self.models.get(name)
        m = entry.model
        pre = m.preprocess
        points: tuple[OperatingPoint, ...] = ()
        default = None
        cal = m.calibration
        if cal is not None:
            points = tuple(
                OperatingPoint(name=p.name, distance=float(p.distance), far=float(p.far), frr=float(p.frr),
                               genuine_pairs=int(cal.genuine_pairs), impostor_pairs=int(cal.impostor_pairs))
                for p in (cal.points[name] for name in MODEL_SOURCES if name in cal.points)
            )
            default = MODEL_SOURCES[entry.policy.default]
        return ModelInfo(
            name=entry.name, fingerprint=m.fingerprint, dim=int(m.dim), metric=m.metric,
            input=InputSpec(width=int(pre.width), height=int(pre.height), channels=int(pre.channels)),
            thresholds=points, default_threshold=default,
        )

    # ------------------------------------------------------------------ embed and verify
    def embed(self, images: Sequence[Payload], *, model: str | None = None) -> np.ndarray:
        """(n, dim) float32 L2-normalised embeddings of `images` (bytes or pixel arrays), in order, by
        the model named `model` (None: the default; InvalidArgument for a name not held)."""
        with self._call() as deadline:
            entry = self.models.get(model)
            self.limits.check_count(len(images), "images")
            for i, image in enumerate(images):
                if isinstance(image, np.ndarray) and image.ndim == 1:
                    raise InvalidArgument(f"images[{i}]: a 1-D array is a vector, not an image")
            prepared = self._prepare(images, [f"images[{i}]" for i in range(len(images))], entry)
            return self._embed_prepared(prepared, deadline, entry)

    def verify(self, pairs: Sequence[tuple[Payload, Payload]], *, threshold: float | None = None,
               target_far: float | None = None, model: str | None = None) -> list[Verification]:
        """Is each pair the same class? Each side is an image or a vector (of the model used). `model`:
        the model that embeds and whose calibration decides (None: the default)."""
        with self._call() as deadline:
            entry = self.models.get(model)
            self.limits.check_count(len(pairs), "pairs")
            choice = parse_threshold(threshold, target_far)
            decision = entry.policy.resolve(threshold=choice.threshold, target_far=choice.target_far)
            flat: list[Payload] = []
            names: list[str] = []
            for i, pair in enumerate(pairs):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise InvalidArgument(f"pairs[{i}]: a pair must have two sides")
                flat.extend(pair)
                names.extend((f"pairs[{i}].a", f"pairs[{i}].b"))
            if not pairs:
                return []
            vectors = self._embed_prepared(self._prepare(flat, names, entry), deadline, entry)
            # The very function (and so the very bits) the gallery reports distances with.
            distances = exact_distances(vectors[0::2], vectors[1::2])
            probabilities = entry.policy.probability(distances)
            return [
                Verification(
                    same=bool(d <= decision.distance), distance=float(d), threshold=decision,
                    probability=None if probabilities is None else float(probabilities[i]),
                )
                for i, d in enumerate(distances)
            ]

    # ------------------------------------------------------------------ galleries
    def create_gallery(self, name: str, *, index: IndexSpec | None = None, scoring: Scoring | None = None,
                       mean_k: int | None = None, threshold: float | None = None, model: str | None = None,
                       keep_images: bool | None = None, cohort_threshold: float | None = None) -> GalleryInfo:
        """A new empty gallery bound to the model named `model` (None: the default; its fingerprint and
        dimension). `keep_images` (None: `settings.keep_images`): keep enrolled images for migrations.
        `cohort_threshold`: the threshold of `verify_class(cohort=True)` calls that give none."""
        with self._call():
            entry = self.models.get(model)
            threshold = check_threshold(threshold)
            return self._named(self.store.create_gallery(
                name, fingerprint=entry.fingerprint, dim=entry.dim,
                index=index or IndexSpec(), scoring=scoring or Scoring.NEAREST,
                mean_k=int(mean_k) if mean_k else DEFAULTS.mean_k, threshold=threshold,
                keep_images=self.settings.keep_images if keep_images is None else bool(keep_images),
                cohort_threshold=cohort_threshold,
            ))

    def update_gallery(self, name: str, *, threshold: float | None = KEEP, cohort_threshold: float | None = KEEP,
                       scoring: Scoring | None = None, mean_k: int | None = None) -> GalleryInfo:
        """Change a gallery's threshold override and cohort threshold (None clears one, KEEP leaves it) and
        its default scoring and mean_k (None leaves them); see `GalleryStore.update_gallery`."""
        with self._call():
            return self._named(_retrying(lambda: self.store.update_gallery(
                name, threshold=threshold, cohort_threshold=cohort_threshold, scoring=scoring, mean_k=mean_k)))

    def get_gallery(self, name: str) -> GalleryInfo:
        with self._call():
            return self._named(_retrying(lambda: self.store.get_gallery(name)))

    def list_galleries(self) -> list[GalleryInfo]:
        with self._call():
            return [self._named(g) for g in self.store.list_galleries()]

    def gallery_page(self, *, page_size: int | None = None, page_token: str = "") -> GalleryPage:
        """Galleries by name, `page_size` (1 to `limits.page_size`; None or 0: all) after the one
        `page_token` names; its `next_page_token` is empty on the last page."""
        with self._call():
            page = parse_page(page_size, page_token, self.limits, default=None)
            infos, token = self.store.gallery_page(page_size=page.size, page_token=page.token)
            return GalleryPage(tuple(self._named(g) for g in infos), token)

    def migrate_gallery(self, name: str, model: str | None) -> MigrationStart:
        """Start moving gallery `name` to the model named `model` in the background (see
        `migration.py`); the answer says which threshold overrides the switch will drop."""
        with self._call():
            entry = self.models.get(model)
            _refuse_migration(self._named(self.store.get_gallery(name)), entry)  # by model names; the store
            info = self.store.start_migration(name, fingerprint=entry.fingerprint, dim=entry.dim)  # checks again
            self.migrator.start(name, entry.fingerprint)
            return MigrationStart(gallery=self._named(self.store.get_gallery(name)), dropped_threshold=info.threshold,
                                  dropped_cohort_threshold=info.cohort_threshold)

    def cancel_migration(self, name: str) -> GalleryInfo:
        """Stop gallery `name`'s migration and drop what it made (`GalleryStore.cancel_migration`); the
        answer comes once its thread has ended, so that migrating again at once starts afresh."""
        with self._call() as deadline:
            info = self.store.cancel_migration(name)
            left = deadline.remaining()  # its thread ends at its next batch, well within a minute
            self.migrator.wait(name, 60.0 if left is None else min(max(left, 0.0), 60.0))
            return self._named(info)

    def _named(self, info: GalleryInfo) -> GalleryInfo:
        """The store's GalleryInfo with the names of its model and of the model it migrates to."""
        bound = self.models.by_fingerprint(info.model_fingerprint)
        migration = info.migration
        if migration is not None:
            target = self.models.by_fingerprint(migration.fingerprint)
            state = migration.state
            if target is None and state != MigrationState.FAILED:
                state = MigrationState.PAUSED
            migration = replace(migration, model=target.name if target else None, state=state)
        return replace(info, model=bound.name if bound else None, migration=migration)

    def delete_gallery(self, name: str) -> int:
        """Delete a gallery and its items; returns how many items it held."""
        with self._call():
            return int(_retrying(lambda: self.store.delete_gallery(name)))

    # ------------------------------------------------------------------ enroll, delete, classes
    def enroll(self, gallery: str, items: Sequence[EnrollItem], *, skip_invalid: bool = False) -> EnrollResult:
        """Store labelled items, committed before this returns. With `skip_invalid`, invalid items are
        reported in `failed` and the others stored; without it one bad item fails the whole batch."""
        with self._call() as deadline:
            pending = self._embed_enroll(self._checked_decode(gallery, items, skip_invalid), deadline)
            return self._commit_enroll(pending, deadline)

    # `enroll` in three stages, for a stream of batches: while one batch is stored, the next is embedded
    # and the one after it decoded, each stage on a thread of its own (`service._Ahead`), so that the
    # encoder waits neither for the decoding nor for the store.
    def decode_enroll(self, gallery: str, items: Sequence[EnrollItem], *, skip_invalid: bool = False
                      ) -> DecodedEnroll:
        """The first stage of `enroll`: checks and decoding. `embed_enroll` takes it on."""
        with self._call():
            return self._checked_decode(gallery, items, skip_invalid)

    def embed_enroll(self, decoded: DecodedEnroll) -> PendingEnroll:
        """The second stage of `enroll`: the forward pass. `commit_enroll` stores what it makes."""
        with self._call() as deadline:
            return self._embed_enroll(decoded, deadline)

    def commit_enroll(self, pending: PendingEnroll) -> EnrollResult:
        """The last stage of `enroll`: stores what `embed_enroll` made, committed before this returns."""
        with self._call() as deadline:
            return self._commit_enroll(pending, deadline)

    def _checked_decode(self, gallery: str, items: Sequence[EnrollItem], skip_invalid: bool) -> DecodedEnroll:
        self.limits.check_count(len(items), "items")
        return _retrying(lambda: self._decode_enroll(gallery, items, skip_invalid))

    def _commit_enroll(self, pending: PendingEnroll, deadline) -> EnrollResult:
        """Store `pending`; when a migration switched the gallery's model since it was embedded, the
        batch is prepared again with the new model and stored (`_retrying`)."""
        first = [pending]

        def attempt() -> EnrollResult:
            if first:
                return self._store_enroll(first.pop(), deadline)
            again = self._decode_enroll(pending.gallery, pending.items, pending.skip_invalid)
            return self._store_enroll(self._embed_enroll(again, deadline), deadline)

        return _retrying(attempt)

    def _decode_enroll(self, gallery: str, items: Sequence[EnrollItem], skip_invalid: bool) -> DecodedEnroll:
        info, entry = self._usable_gallery(gallery)
        target = self._migration_target(info)
        failures: dict[int, str] = {}
        seen_ids: dict[str, int] = {}
        for i, item in enumerate(items):
            try:
                check_enroll_item(item, i, seen_ids, self.limits)
            except InvalidArgument as exc:
                if not skip_invalid:
                    raise
                failures[i] = exc.details
        # Items whose client id is already stored are answered from the store without decoding or
        # embedding them: a resumed bulk run costs a lookup per item, not a forward pass. (An item
        # stored after this lookup is found again by the store, which does not store it twice.) An image
        # whose client id is stored with another image is refused: a client id names one image.
        names = [f"items[{i}]" for i in range(len(items))]
        digests = tuple(_digest(it) if i not in failures else None for i, it in enumerate(items))
        known = self.store.stored_client_ids(
            gallery, [it.client_id for i, it in enumerate(items) if i not in failures])
        already: dict[int, Enrolled] = {}
        for i, it in enumerate(items):
            if i in failures or it.client_id not in known:
                continue
            stored = known[it.client_id]
            if another_image(stored.digest, digests[i]):
                message = f"{names[i]}: {stored_other_image(it.client_id, stored.id, gallery)}"
                if not skip_invalid:
                    raise AlreadyExists(message)
                failures[i] = message
            else:
                already[i] = Enrolled(stored.id, it.client_id, stored.label, False)
        skip = sorted(set(failures) | set(already))
        payloads = [it.payload for it in items]
        if target is not None:
            # Applied to both models: the new one's vectors are stored beside the old one's.
            for i, p in enumerate(payloads):
                if i not in skip and isinstance(p, np.ndarray) and p.ndim == 1:
                    raise FailedPrecondition(
                        f"{names[i]}: gallery {gallery!r} is moving to model {target.name!r}: enroll images, "
                        "not vectors, until the migration completes")
        prepared = self._prepare(payloads, names, entry, collect_failures=skip_invalid, skip=skip)
        failures.update(dict(prepared.failed))
        ok = prepared.ok_positions
        again = kept_images = None
        if ok and target is not None:
            again = self._prepare([payloads[i] for i in ok], [names[i] for i in ok], target)
        if ok and info.keep_images:
            kept_images = [None if _is_vector(payloads[i]) else kept.encode(payloads[i]) for i in ok]
        return DecodedEnroll(gallery, tuple(items), skip_invalid, entry, target, prepared, again, kept_images,
                             already, failures, digests)

    def _embed_enroll(self, decoded: DecodedEnroll, deadline) -> PendingEnroll:
        ok = decoded.prepared.ok_positions
        vectors = next_vectors = None
        if ok:
            vectors = self._embed_prepared(decoded.prepared, deadline, decoded.entry)
            if decoded.again is not None:
                next_vectors = self._embed_prepared(decoded.again, deadline, decoded.target)
        next_fingerprint = None if decoded.target is None else decoded.target.fingerprint
        return PendingEnroll(decoded.gallery, decoded.items, decoded.skip_invalid, decoded.entry.fingerprint,
                             next_fingerprint, tuple(ok), vectors, next_vectors, decoded.kept_images,
                             decoded.already, decoded.failures, decoded.digests)

    def _store_enroll(self, pending: PendingEnroll, deadline) -> EnrollResult:
        """Store a prepared batch; ModelChanged when the gallery's model is no longer the one it was
        embedded with (`_retrying` then prepares it again)."""
        items, ok = pending.items, pending.ok
        by_position: dict[int, Enrolled] = dict(pending.already)
        if ok:
            deadline.check("storing")
            stored = self.store.enroll(
                pending.gallery, [items[i].label for i in ok], pending.vectors,
                client_ids=[items[i].client_id or None for i in ok],
                metadata=[dict(items[i].metadata or {}) for i in ok],
                fingerprint=pending.fingerprint, images=pending.kept_images,
                digests=[pending.digests[i] for i in ok], next_vectors=pending.next_vectors,
                next_fingerprint=pending.next_fingerprint,
            )
            by_position.update(zip(ok, stored, strict=True))
        failed = tuple(EnrollFailure(index=i, client_id=items[i].client_id or None, reason=reason)
                       for i, reason in sorted(pending.failures.items()))
        return EnrollResult(stored=tuple(by_position[i] for i in sorted(by_position)), failed=failed)

    def find_items(self, gallery: str, client_ids: Sequence[str]) -> list[Enrolled]:
        """The items of `client_ids` that `gallery` stores already (created False), in the order of
        `client_ids`; ids not stored are left out. A plain read, for skipping work before `enroll`."""
        with self._call():
            client_ids = list(client_ids)
            self.limits.check_count(len(client_ids), "client ids")
            if not all(isinstance(c, str) for c in client_ids):
                raise InvalidArgument("client ids must be strings")
            known = self.store.stored_client_ids(gallery, client_ids)
            return [Enrolled(known[c].id, c, known[c].label, False) for c in dict.fromkeys(client_ids) if c in known]

    def delete(self, gallery: str, *, ids: Sequence[int] = (), client_ids: Sequence[str] = (),
               label: str | None = None) -> int:
        """Delete items by stored id or client id, or a whole class by label; returns items removed."""
        with self._call():
            ids, client_ids = list(ids), list(client_ids)
            if label:
                if ids or client_ids:
                    raise InvalidArgument("delete either a class (label) or items (ids, client_ids), not both")
                return int(_retrying(lambda: self.store.delete_class(gallery, label)))
            if not ids and not client_ids:
                raise InvalidArgument("nothing to delete: give ids, client_ids or a label")
            self.limits.check_count(len(ids) + len(client_ids), "ids and client_ids")
            ids = [stored_id(item, f"ids[{i}]") for i, item in enumerate(ids)]  # the wire's uint64 reaches past int64
            return int(_retrying(lambda: self.store.delete_items(gallery, ids=ids, client_ids=client_ids)))

    def list_classes(self, gallery: str, *, page_size: int | None = None, page_token: str = "") -> ClassPage:
        """Enrolled classes with their item counts, ordered by label, `page_size` (1 to
        `limits.page_size`; None or 0: `DEFAULTS.page_size`) per page."""
        with self._call():
            page = parse_page(page_size, page_token, self.limits)
            return _retrying(lambda: self.store.list_classes(gallery, page_size=page.size, page_token=page.token))

    # ------------------------------------------------------------------ queries
    def identify(self, gallery: str, probes: Sequence[Payload], *, k: int | None = None, scoring: Scoring | None = None,
                 mean_k: int | None = None, threshold: float | None = None, target_far: float | None = None,
                 labels: Sequence[str] | None = None, skip_invalid: bool = False,
                 names: Sequence[str] | None = None) -> list[Identification | ProbeFailure]:
        """For each probe, up to k enrolled classes ranked by class distance and a decision (a label, or
        unknown when the best distance is over the threshold).

        One bad probe fails the call (InvalidArgument or ResourceExhausted naming it), unless
        `skip_invalid`: then each bad probe's answer is a ProbeFailure, in its place. `names[i]` names
        probe i in errors (default "probes[i]"). `k` None or 0: `DEFAULTS.identify_k`.
        """
        with self._call() as deadline:
            self.limits.check_count(len(probes), "probes")
            query = parse_identify(k, scoring, mean_k, threshold, target_far, labels, self.limits)
            names = list(names) if names is not None else [f"probes[{i}]" for i in range(len(probes))]

            def attempt():
                _, entry = self._usable_gallery(gallery, searchable=True)
                if not probes:
                    return []
                prepared = self._prepare(probes, names, entry, collect_failures=skip_invalid)
                vectors = self._embed_prepared(prepared, deadline, entry)
                key = SearchKey(gallery, entry.name, query)
                answers = self._search(key, vectors, None, deadline) if len(vectors) else []
                failures = {i: ProbeFailure(index=i, reason=reason) for i, reason in prepared.failed}
                ok = iter(answers)
                return [failures[i] if i in failures else next(ok) for i in range(len(probes))]

            return _retrying(attempt)

    def verify_class(self, gallery: str, queries: Sequence[tuple[Payload, str]], *, scoring: Scoring | None = None,
                     mean_k: int | None = None, threshold: float | None = None,
                     target_far: float | None = None, cohort: bool = False) -> list[Verification]:
        """Is each probe the enrolled class it names? Uses the same class distance as identify; with
        `cohort`, that distance normalized by the probe's distance to the nearest other class."""
        with self._call() as deadline:
            query = parse_verify_class(queries, scoring, mean_k, threshold, target_far, self.limits, cohort)

            def attempt():
                _, entry = self._usable_gallery(gallery, searchable=True)
                if not queries:
                    return []
                vectors = self._vectors([q[0] for q in queries], "queries", deadline, entry, suffix=".probe")
                return self._search(SearchKey(gallery, entry.name, query), vectors, [q[1] for q in queries], deadline)

            return _retrying(attempt)

    def search(self, gallery: str, probes: Sequence[Payload], *, k: int | None = None,
               labels: Sequence[str] | None = None) -> list[list[Neighbor]]:
        """For each probe, its k nearest stored items, nearest first (`k` None or 0: `DEFAULTS.search_k`)."""
        with self._call() as deadline:
            self.limits.check_count(len(probes), "probes")
            query = parse_search(k, labels, self.limits)

            def attempt():
                _, entry = self._usable_gallery(gallery, searchable=True)
                if not probes:
                    return []
                vectors = self._vectors(probes, "probes", deadline, entry)
                return self._search(SearchKey(gallery, entry.name, query), vectors, None, deadline)

            return _retrying(attempt)

    # ------------------------------------------------------------------ internals
    def _usable_gallery(self, name: str, searchable: bool = False) -> tuple[GalleryInfo, ServedModel]:
        """The gallery and its model, if it exists, its model is held and (for queries) it holds items:
        checked before any embedding work, so a call that must fail fails at once. The store checks again."""
        info = self.store.get_gallery(name)
        entry = self.models.by_fingerprint(info.model_fingerprint)
        if entry is None:
            raise FailedPrecondition(_unserved(info))
        if searchable and info.item_count == 0:
            raise FailedPrecondition(f"gallery {name!r} is empty: enroll images into it first")
        return info, entry

    def _migration_target(self, info: GalleryInfo) -> ServedModel | None:
        """The model a gallery is moving to, when it is (None when not, or its migration failed)."""
        m = info.migration
        if m is None or m.state == MigrationState.FAILED:
            return None
        target = self.models.by_fingerprint(m.fingerprint)
        if target is None:
            raise FailedPrecondition(
                f"gallery {info.name!r} is moving to model fingerprint {m.fingerprint}, which this server does not "
                "hold: enrollments wait until it is restarted with that model (--model NAME=PATH)")
        return target

    def _prepare(self, payloads: Sequence[Payload], names: Sequence[str], entry: ServedModel, *,
                 collect_failures: bool = False, skip: Sequence[int] = ()) -> Prepared:
        model = entry.model
        started = time.monotonic()
        prepared = prepare(payloads, names, preprocess=model.preprocess, dim=int(model.dim),
                           max_pixels=self.settings.max_pixels, collect_failures=collect_failures, skip=skip,
                           gate=self._decode_gate)
        self._time("decode", time.monotonic() - started)
        return prepared

    def _vectors(self, payloads: Sequence[Payload], what: str, deadline, entry: ServedModel,
                 suffix: str = "") -> np.ndarray:
        prepared = self._prepare(payloads, [f"{what}[{i}]{suffix}" for i in range(len(payloads))], entry)
        return self._embed_prepared(prepared, deadline, entry)

    def _embed_prepared(self, prepared: Prepared, deadline, entry: ServedModel) -> np.ndarray:
        """Run the prepared images through the encoder batcher (gathered with other calls' images for
        the same model, or run on this thread when the encoder is idle); vectors and embeddings in order."""
        embedded = np.zeros((0, entry.dim), dtype=np.float32)
        if len(prepared.images):
            deadline.check("embedding")
            embedded = self._encoder.call(entry.name, prepared.images, len(prepared.images), deadline)
        return prepared.assemble(embedded)

    def _search(self, key: SearchKey, vectors: np.ndarray, extra: list | None, deadline) -> list:
        deadline.check("searching")
        return self._searcher.call(key, (vectors, extra), len(vectors), deadline)

    def _encoder_thread_start(self) -> None:
        import torch

        torch.set_num_threads(self.settings.threads)

    def _run_encoder(self, key: Hashable, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        model = self.models.get(str(key)).model  # the key is the model's name
        images = parts[0] if len(parts) == 1 else np.concatenate(parts)
        step = self.settings.encoder_batch
        embedder = self._remote_encoders.get(str(key), model)
        chunks = [embedder.embed_arrays(images[i:i + step]) for i in range(0, len(images), step)]
        out = np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
        return _split(out, [len(p) for p in parts])

    def _run_search(self, key: SearchKey, parts: Sequence[tuple[np.ndarray, list | None]]) -> list[list]:
        vectors = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        gallery, entry, q = key.gallery, self.models.get(key.model), key.query
        fp = entry.fingerprint
        if isinstance(q, IdentifyQuery):
            results = self.store.identify(
                gallery, vectors, policy=entry.policy, k=q.k, scoring=q.scoring, mean_k=q.mean_k,
                labels=list(q.labels) if q.labels is not None else None, threshold=q.decision.threshold,
                target_far=q.decision.target_far, fingerprint=fp)
        elif isinstance(q, VerifyClassQuery):
            labels = [label for p in parts for label in p[1]]
            results = self.store.verify_class(
                gallery, vectors, labels, policy=entry.policy, scoring=q.scoring, mean_k=q.mean_k,
                threshold=q.decision.threshold, target_far=q.decision.target_far, fingerprint=fp, cohort=q.cohort)
        else:
            results = self.store.search(gallery, vectors, k=q.k,
                                        labels=list(q.labels) if q.labels is not None else None, fingerprint=fp)
        return _split(list(results), [len(p[0]) for p in parts])

    def _observe(self, stage: str, calls: int, rows: int) -> None:
        if self.observer is not None:
            self.observer(stage, calls, rows)

    def _time(self, stage: str, seconds: float) -> None:
        if self.timer is not None:
            self.timer(stage, seconds)


# ---------------------------------------------------------------------- helpers
def _retrying(attempt: Callable[[], Any]) -> Any:
    """Run `attempt`, again when a migration switched the gallery's model under it (its vectors came
    from the old model): the next attempt embeds with the new one."""
    for tries in range(SWITCH_RETRIES, 0, -1):
        try:
            return attempt()
        except ModelChanged:
            if tries == 1:
                raise
            log.debug("a gallery switched models during a call; embedding again")
    raise AssertionError("unreachable")


def _refuse_migration(info: GalleryInfo, target: ServedModel) -> None:
    """FailedPrecondition, by model names, when gallery `info` is bound to `target` already or is moving to
    another model; asking again for the migration in progress (or one that failed) is no error."""
    moving = info.migration
    if moving is not None and moving.state == MigrationState.FAILED:
        moving = None
    if moving is not None:
        where = (f"model {moving.model!r}" if moving.model is not None else
                 f"model fingerprint {moving.fingerprint}, which this server does not hold (restart it with that "
                 "model to complete the move)")
        moving_text = f"is moving to {where}, {moving.done} of {moving.total} items done"
    if info.model_fingerprint == target.fingerprint:
        also = f" (it {moving_text})" if moving is not None else ""
        raise FailedPrecondition(f"gallery {info.name!r} is already bound to model {target.name!r}{also}")
    if moving is not None and moving.fingerprint != target.fingerprint:
        raise FailedPrecondition(f"gallery {info.name!r} {moving_text}: wait for that move to complete before "
                                 f"moving it to model {target.name!r}")


def _unserved(info: GalleryInfo) -> str:
    """The one message for a gallery whose model the server does not hold: at start-up and on each call."""
    fix = "restart the server with that model (--model NAME=PATH)"
    if info.keep_images:
        fix += " or migrate the gallery to a model it holds (twinsearch galleries migrate NAME --to MODEL)"
    return (f"gallery {info.name!r} is bound to model fingerprint {info.model_fingerprint}, which this server "
            f"does not hold: {fix}")


def _is_vector(payload: Payload) -> bool:
    return isinstance(payload, np.ndarray) and payload.ndim == 1


def _digest(item: EnrollItem) -> bytes | None:
    """The image digest an item is stored with: for an image (bytes or pixels) with a client id; None
    for a vector, an item without a client id, or a payload `_prepare` will refuse."""
    if not item.client_id or not isinstance(item.payload, (bytes, bytearray, memoryview, np.ndarray)):
        return None
    return kept.payload_digest(item.payload)


def _split(rows, sizes: Sequence[int]) -> list:
    out, start = [], 0
    for n in sizes:
        out.append(rows[start:start + n])
        start += n
    return out


def _remote_encoders(settings: EngineSettings, specs, registry: ModelRegistry) -> dict:
    """The pools of encoder replicas on Ray that `settings.encoders == "ray"` asks for, one per served
    model, by name (imported only then: the default server never imports Ray). RayMissing or
    RayUnavailable (RuntimeErrors) when they cannot be; pools already started are closed then."""
    from twinsearch.encoder.model import resolve_model_path

    from .cluster.encoders import RayEncoderPool
    from .cluster.runtime import RaySettings

    pools: dict = {}
    try:
        for (_, path), entry in zip(specs, registry, strict=True):
            pools[entry.name] = RayEncoderPool(RaySettings(settings.ray_address, None, settings.ray_object_store_mb),
                                               resolve_model_path(path), entry.fingerprint,
                                               settings.encoder_replicas)
    except BaseException:
        for pool in reversed(list(pools.values())):  # the first one started Ray, if any
            pool.close()
        raise
    return pools


def _open_store(data_dir: Path, settings: EngineSettings):
    """Open the gallery store with limits that agree with the engine's (`settings.store` overrides)."""
    from .store import GalleryStore, StoreSettings

    options = {
        "max_k": settings.max_k,
        # A gathered search holds up to search_batch probes, or one request of up to max_batch.
        "max_queries": max(settings.max_batch, settings.search_batch),
        "max_batch": max(settings.max_batch, StoreSettings.max_batch),
        **settings.store,
    }
    return GalleryStore.open(data_dir, StoreSettings(**options))
