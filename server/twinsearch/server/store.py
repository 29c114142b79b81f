"""The gallery store: named galleries of enrolled vectors, durable in SQLite, searched with FAISS.

This is the transport-free core that the gRPC servicer and the local client both call. Every method
takes and returns plain Python and numpy values and the dataclasses of `twinsearch.client.types`,
and raises the errors of `twinsearch.client.errors`.

Vectors are float32 rows; the encoder emits L2-normalised rows and the distances reported (Euclidean,
in [0, 2] for unit vectors, smaller = more alike) assume that. Vectors are stored as given once
checked finite: they are not re-normalised here, so that what is stored is what the encoder produced.
Prototype scoring normalises each class mean to unit length.

Consistency: writes are serialised (one store-wide writer mutex); a change is committed to SQLite
first, then applied to the gallery's in-memory index under its write lock, and only then
acknowledged. Queries hold the gallery's read lock, so many run at once and each sees a batch wholly
or not at all. Deletes hold the write lock across their SQLite transaction, so that a query's reads
from SQLite (metadata, label-restricted vectors) agree with its index.

Kept images (`images.py`) are rows of the same database, written in the transaction that inserts the
items naming them and deleted in the one that deletes the last item naming them. A migration to
another model stores the new model's vectors beside the items (`add_migrated`, and
`enroll(next_vectors=...)` for items enrolled meanwhile) and ends with `finish_migration`, which builds
the new model's gallery while the old one answers, then commits the switch and swaps it in under the
old one's write lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from twinsearch.client.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from twinsearch.client.types import (
    KEEP,
    Candidate,
    ClassCount,
    ClassPage,
    Enrolled,
    GalleryInfo,
    Identification,
    IndexKind,
    IndexSpec,
    Migration,
    MigrationState,
    Neighbor,
    Scoring,
    Threshold,
    ThresholdSource,
    Verification,
)
from twinsearch.encoder.evaluation.references import cohort_normalized

from . import images as kept
from . import pages
from .database import Database, StoredId, is_disk_full
from .gallery import Gallery, SearchLimits
from .index import GpuContext, IndexParams, configure_faiss
from .limits import DEFAULTS, LIMITS
from .thresholds import ThresholdPolicy
from .validation import (
    ModelChanged,
    check_client_ids,
    check_fingerprint,
    check_gallery_name,
    check_k,
    check_label,
    check_labels,
    check_metadata,
    check_query_count,
    check_threshold,
    check_vectors,
)

log = logging.getLogger(__name__)

DB_NAME = "gallery.sqlite3"
SNAPSHOT_DIR = "snapshots"
LOCK_NAME = "store.lock"
# HNSW beam widths: faiss sizes its heaps by them, so ef_search 2^31 - 1 makes every search take seconds
# and gigabytes; far above any width that still improves recall.
MAX_EF = 16_384


@dataclass(frozen=True)
class StoreSettings:
    """Settings of a gallery store; built by the command line from flags and TWINSEARCH_* variables."""

    use_gpu: bool | None = None      # None: use a GPU when faiss sees one; True: require one; False: never
    gpu_device: int = 0
    synchronous: str = "FULL"        # SQLite: FULL survives power loss; NORMAL only process crashes
    sqlite_writer_cache_mb: int = 64  # page cache of the writing connection
    max_k: int = 1000                # largest k a query may ask for
    max_queries: int = 10_000        # query vectors per call
    max_batch: int = 100_000         # vectors per enroll call
    max_items: int = 50_000_000      # items per gallery
    snapshot_on_close: bool = True
    # Also snapshot a gallery once this many items were enrolled or deleted since its last snapshot
    # (0: only at close and on `snapshot()`). Bounds the catch-up work at the next start; the writer
    # that crosses it waits for the snapshot (about 3 s per million 128-d vectors), queries do not.
    snapshot_after_changes: int = 0
    index: IndexParams = field(default_factory=IndexParams)
    limits: SearchLimits = field(default_factory=SearchLimits)

    def __post_init__(self) -> None:
        if self.synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {self.synchronous!r}")
        for name in ("max_k", "max_queries", "max_batch", "max_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


def another_image(stored: bytes | None, sent: bytes | None) -> bool:
    """Whether an item sent under a stored client id is another image than the one stored: only when
    both digests are known (vectors, and items stored before schema version 5, have none)."""
    return stored is not None and sent is not None and stored != sent


def stored_other_image(client_id: str, item_id: int, gallery: str) -> str:
    """The message for a client id sent again with another image."""
    return (f"client id {client_id!r} names another image in gallery {gallery!r} (item {item_id}): delete that "
            "item first to replace it, or give this image another client id")


def _unreadable(path: Path, exc: sqlite3.DatabaseError) -> FailedPrecondition | ResourceExhausted:
    """The error for a store file SQLite cannot read as ours (corrupt, truncated, another program's): one
    line naming it, rather than SQLite's error from somewhere in the opening."""
    if is_disk_full(exc):
        return ResourceExhausted(f"cannot open the gallery store {path}: the disk is full: free space")
    if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return FailedPrecondition(f"cannot open the gallery store {path}: another program holds it locked "
                                  f"({exc}): stop it, or choose another data folder")
    return FailedPrecondition(f"{path} cannot be read as a twinsearch gallery store ({exc}): it is corrupt or "
                              "not twinsearch's; restore it from a backup, or choose another data folder")


class GalleryStore:
    """Galleries in one data folder. Open with `GalleryStore.open(path)`; one process at a time."""

    def __init__(self, data_dir: Path, settings: StoreSettings, db: Database, lock_fd: int,
                 gpu: GpuContext | None):
        self.data_dir = data_dir
        self.settings = settings
        self.db = db
        self._lock_fd = lock_fd
        self.gpu = gpu
        self._snapshots = data_dir / SNAPSHOT_DIR
        self._galleries: dict[str, Gallery] = {}
        self._registry = threading.Lock()  # guards _galleries
        self._writer = threading.Lock()    # serialises every change
        self._closed = False
        self.load_report: dict[str, str] = {}  # gallery -> "snapshot" | "caught up" | "rebuilt"

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, data_dir: Path | str, settings: StoreSettings | None = None) -> GalleryStore:
        """Open (creating if needed) the store in `data_dir`; loads every gallery's index.

        Raises FailedPrecondition when another process holds the store or use_gpu=True without a GPU.
        """
        settings = settings or StoreSettings()
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(lock_fd)
            raise FailedPrecondition(
                f"gallery store {data_dir} is already open (another process or another GalleryStore): stop the "
                "other server, or choose another data folder"
            ) from exc
        try:
            configure_faiss(settings.index)
            gpus = faiss.get_num_gpus()
            if settings.use_gpu and gpus == 0:
                raise FailedPrecondition("use_gpu is set but faiss sees no GPU")
            gpu = GpuContext(settings.gpu_device) if (settings.use_gpu is not False and gpus > 0) else None
            db = Database(data_dir / DB_NAME, synchronous=settings.synchronous,
                          writer_cache_mb=settings.sqlite_writer_cache_mb)
        except sqlite3.DatabaseError as exc:
            os.close(lock_fd)
            raise _unreadable(data_dir / DB_NAME, exc) from exc
        except BaseException:
            os.close(lock_fd)
            raise
        store = cls(data_dir, settings, db, lock_fd, gpu)
        try:
            kept.import_folder(data_dir / kept.FOLDER, db)  # a store from before schema version 3
            migrations = db.migrations()
            for row in db.galleries():
                g = Gallery(row, db, settings.index, settings.limits, gpu)
                store.load_report[row.name] = g.load(store._snapshots)
                migration = migrations.get(row.id)
                g.set_migration(migration, db.migrated_count(row.id) if migration is not None else 0)
                store._maintain(g)
                store._galleries[row.name] = g
        except sqlite3.DatabaseError as exc:
            store.close(snapshot=False)
            raise _unreadable(data_dir / DB_NAME, exc) from exc
        except BaseException:
            store.close(snapshot=False)
            raise
        log.info("opened gallery store %s: %s", data_dir, store.load_report)
        return store

    def close(self, *, snapshot: bool | None = None) -> None:
        """Write snapshots of changed galleries (atomically), close SQLite and release the store."""
        with self._writer:  # no change is half applied while the snapshots are written
            if self._closed:
                return
            if snapshot if snapshot is not None else self.settings.snapshot_on_close:
                try:
                    self.snapshot()
                except Exception:  # the snapshot is derived: losing it costs a rebuild, never data
                    log.exception("writing snapshots at close failed")
            self._closed = True
            self.db.close()
            os.close(self._lock_fd)

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def snapshot(self, name: str | None = None) -> int:
        """Snapshot the changed galleries (or the named one); returns how many were written."""
        if name is not None:
            galleries = [self._gallery(name)]
        else:
            with self._registry:
                galleries = list(self._galleries.values())
        written = 0
        for g in galleries:
            with g.lock.read():
                if g.deleted or not (g.dirty or name):
                    continue
                g.write_snapshot(self._snapshots)
                written += 1
        return written

    def _gallery(self, name: str) -> Gallery:
        if self._closed:
            raise FailedPrecondition("the gallery store is closed")
        with self._registry:
            g = self._galleries.get(name)
        if g is None:
            raise NotFound(f"no gallery named {name!r}")
        return g

    @staticmethod
    def _still_there(g: Gallery) -> None:
        if g.deleted:
            raise NotFound(f"no gallery named {g.name!r}")
        if g.retired:
            raise ModelChanged(f"gallery {g.name!r} moved to another model during this call: retry it")

    # ------------------------------------------------------------------ galleries
    def create_gallery(self, name: str, *, fingerprint: str, dim: int, index: IndexSpec | None = None,
                       scoring: Scoring = Scoring.NEAREST, mean_k: int = DEFAULTS.mean_k,
                       threshold: float | None = None, keep_images: bool = False,
                       cohort_threshold: float | None = None) -> GalleryInfo:
        """`cohort_threshold`: the threshold of `verify_class(cohort=True)` calls that give none."""
        check_gallery_name(name)
        index = index or IndexSpec()
        if not isinstance(fingerprint, str) or not fingerprint:
            raise InvalidArgument("a gallery needs the model fingerprint of its vectors")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= LIMITS.max_dim:
            raise InvalidArgument(f"dim must be an integer in [1, {LIMITS.max_dim}], got {dim!r}")
        try:
            scoring = Scoring(scoring)
            kind = IndexKind(index.kind)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from exc
        check_k(mean_k, self.settings.max_k, "mean_k")
        threshold = check_threshold(threshold, "gallery threshold")
        cohort_threshold = check_threshold(cohort_threshold, "gallery cohort threshold", field="cohort_threshold")
        for key in ("nlist", "nprobe"):
            if getattr(index, key) < 0:
                raise InvalidArgument(f"index {key} must be >= 0 (0 chooses from the gallery size)")
        if index.nprobe and index.nlist and index.nprobe > index.nlist:
            raise InvalidArgument(f"index nprobe {index.nprobe} exceeds nlist {index.nlist}")
        if not (2 <= index.hnsw_m <= 256 and 1 <= index.ef_construction <= MAX_EF and 1 <= index.ef_search <= MAX_EF):
            raise InvalidArgument(f"HNSW needs 2 <= hnsw_m <= 256, 1 <= ef_construction <= {MAX_EF:,} and "
                                  f"1 <= ef_search <= {MAX_EF:,}")
        spec = {**asdict(index), "kind": kind.value}
        with self._writer:
            with self.db.transaction() as conn:
                if self.db.gallery_exists(conn, name):
                    raise AlreadyExists(f"a gallery named {name!r} exists")
                row = self.db.insert_gallery(conn, name, fingerprint, dim, spec, scoring.value, mean_k, threshold,
                                             keep_images=bool(keep_images), cohort_threshold=cohort_threshold)
            g = Gallery(row, self.db, self.settings.index, self.settings.limits, self.gpu)
            with self._registry:
                self._galleries[name] = g
        log.info("created gallery %r (%s, dim %d, %s index)", name, fingerprint, dim, kind.value)
        return self._info(g)

    def update_gallery(self, name: str, *, threshold: float | None = KEEP, cohort_threshold: float | None = KEEP,
                       scoring: Scoring | None = None, mean_k: int | None = None) -> GalleryInfo:
        """Change a gallery's decision settings: `threshold` and `cohort_threshold` (None clears one, KEEP
        leaves it), the default `scoring` and `mean_k` (None leaves them). Committed before it returns.
        FailedPrecondition while the gallery migrates: the switch drops its thresholds."""
        from dataclasses import replace

        changes: dict = {}
        if threshold is not KEEP:
            changes["threshold"] = check_threshold(threshold, "gallery threshold")
        if cohort_threshold is not KEEP:
            changes["cohort_threshold"] = check_threshold(cohort_threshold, "gallery cohort threshold",
                                                          field="cohort_threshold")
        if scoring is not None:
            try:
                changes["scoring"] = Scoring(scoring).value
            except ValueError as exc:
                raise InvalidArgument(str(exc), field="scoring") from exc
        if mean_k is not None:
            changes["mean_k"] = check_k(mean_k, self.settings.max_k, "mean_k")
        g = self._gallery(name)
        with self._writer:
            self._still_there(g)
            if g.migration is not None:
                raise FailedPrecondition(
                    f"gallery {name!r} is moving to another model, whose switch drops its thresholds: change its "
                    "settings after the switch")
            if changes:
                row = replace(g.row, **changes)
                with self.db.transaction() as conn:
                    self.db.update_gallery(conn, row)
                g.settings_changed(row)
                log.info("gallery %r: %s", name, ", ".join(f"{k} {v}" for k, v in changes.items()))
            return self._info(g)

    def _info(self, g: Gallery) -> GalleryInfo:
        return GalleryInfo(
            name=g.name,
            model_fingerprint=g.fingerprint,
            dim=g.dim,
            index=g.spec,
            scoring=g.scoring,
            mean_k=g.mean_k,
            threshold=g.threshold,
            cohort_threshold=g.row.cohort_threshold,
            class_count=g.class_count,
            item_count=g.item_count,
            on_gpu=g.on_gpu,
            keep_images=g.keep_images,
            migration=None if g.migration is None else Migration(
                model=None, fingerprint=g.migration.fingerprint, done=g.migrated, total=g.item_count,
                state=MigrationState.FAILED if g.migration.error else MigrationState.RUNNING,
                error=g.migration.error),
        )

    def get_gallery(self, name: str) -> GalleryInfo:
        g = self._gallery(name)
        with g.lock.read():
            self._still_there(g)
            return self._info(g)

    def list_galleries(self) -> list[GalleryInfo]:
        with self._registry:
            names = sorted(self._galleries)
        return self._infos(names)

    def gallery_page(self, *, page_size: int | None, page_token: str = "") -> tuple[list[GalleryInfo], str]:
        """(galleries by name, `page_size` of them (None: all) after the one `page_token` names, the token
        of the next page or "" on the last)."""
        after = pages.after_key(page_token, pages.GALLERIES)
        with self._registry:
            names = sorted(self._galleries)
        page, token = pages.page_of(names, page_size or max(1, len(names)), after, pages.GALLERIES)
        return self._infos(page), token

    def _infos(self, names: Sequence[str]) -> list[GalleryInfo]:
        """The GalleryInfo of each of `names` still there (one deleted meanwhile is left out)."""
        out = []
        for name in names:
            for _ in range(3):
                try:
                    out.append(self.get_gallery(name))
                except NotFound:  # deleted meanwhile
                    break
                except ModelChanged:  # replaced by its migrated self meanwhile: ask again
                    continue
                break
        return out

    def delete_gallery(self, name: str) -> int:
        """Delete a gallery and all its items; returns how many items it held."""
        g = self._gallery(name)
        with self._writer, g.lock.write():
            self._still_there(g)
            with self.db.transaction() as conn:
                images = self.db.images_of(conn, gallery_id=g.id)
                n = self.db.delete_gallery(conn, g.id)
                self.db.drop_unnamed_images(conn, images)
            g.mark_deleted()
            with self._registry:
                del self._galleries[name]
        from . import snapshot as snapshots

        snapshots.remove(self._snapshots, g.id)
        log.info("deleted gallery %r (%d items)", name, n)
        return n

    # ------------------------------------------------------------------ enroll and delete
    def enroll(self, name: str, labels: Sequence[str], vectors: np.ndarray, *,
               client_ids: Sequence[str | None] | None = None,
               metadata: Sequence[dict[str, str]] | None = None,
               fingerprint: str | None = None, images: Sequence[bytes | None] | None = None,
               digests: Sequence[bytes | None] | None = None,
               next_vectors: np.ndarray | None = None, next_fingerprint: str | None = None) -> list[Enrolled]:
        """Store a batch of labelled vectors (float32 (n, dim)), atomically; one Enrolled per row, in order.

        Returned only after the SQLite commit. A row whose client id is already stored in the gallery
        is not stored again: its Enrolled is the stored item with created=False. `digests`: each row's
        image digest (`images.payload_digest`; None: none, as for a vector); a row whose client id is
        stored with another digest makes the call raise AlreadyExists, storing nothing (`Engine`
        answers most such rows before they get here; this catches one stored meanwhile). `images`: each
        row's image bytes to keep (`images.encode`; None: none), kept when the gallery keeps images.
        While the gallery migrates, `next_vectors` are the rows' vectors from the model it migrates to
        (`next_fingerprint`): without them (or from another model) the call raises ModelChanged,
        and the caller embeds again.
        """
        g = self._gallery(name)
        check_fingerprint(fingerprint, g.fingerprint, name)
        vectors = check_vectors(vectors, g.dim, name)
        n = len(vectors)
        if n > self.settings.max_batch:
            raise ResourceExhausted(f"{n} vectors in one enroll call, at most {self.settings.max_batch}")
        labels = check_labels(labels, n)
        cids = check_client_ids(client_ids, n)
        metas = check_metadata(metadata, n)
        if images is not None and len(images) != n:
            raise InvalidArgument(f"{len(images)} images for {n} vectors")
        if digests is not None and len(digests) != n:
            raise InvalidArgument(f"{len(digests)} digests for {n} vectors")
        with self._writer:
            self._still_there(g)
            migration = g.migration if g.migration is not None and not g.migration.error else None
            if migration is not None and (next_fingerprint != migration.fingerprint or next_vectors is None):
                raise ModelChanged(f"gallery {name!r} started moving to model {migration.fingerprint!r} during "
                                   "this call: retry it")
            if migration is not None:
                next_vectors = check_vectors(next_vectors, migration.dim, name)
            migrated = 0
            with self.db.transaction() as conn:
                wanted = [c for c in cids if c is not None]
                existing = self.db.existing_client_ids(conn, g.id, wanted) if wanted else {}
                if digests is not None:
                    clash = [i for i in range(n) if cids[i] in existing
                             and another_image(existing[cids[i]].digest, digests[i])]
                    if clash:
                        i = clash[0]
                        more = f" (and {len(clash) - 1} more of this call)" if len(clash) > 1 else ""
                        raise AlreadyExists(f"{stored_other_image(cids[i], existing[cids[i]].id, name)}{more}")
                new_rows = np.array([i for i in range(n) if cids[i] is None or cids[i] not in existing],
                                    dtype=np.int64)
                if g.item_count + len(new_rows) > self.settings.max_items:
                    raise ResourceExhausted(
                        f"gallery {name!r} holds {g.item_count} items; {len(new_rows)} more would pass "
                        f"the limit of {self.settings.max_items}"
                    )
                new_labels = [labels[i] for i in new_rows]
                new_vectors = vectors[new_rows]
                keys = None
                if g.keep_images and images is not None:
                    kept_rows = [int(i) for i in new_rows if images[i] is not None]
                    stored_keys = dict(zip(kept_rows, self.db.put_images(conn, [images[i] for i in kept_rows]),
                                           strict=True))
                    keys = [stored_keys.get(int(i)) for i in new_rows]
                ids = self.db.insert_items(conn, g.id, new_labels, new_vectors, [cids[i] for i in new_rows],
                                           [metas[i] for i in new_rows], keys,
                                           None if digests is None else [digests[i] for i in new_rows])
                if migration is not None and len(ids):
                    migrated = self.db.insert_migrated(conn, g.id, ids, next_vectors[new_rows])
            g.count_migrated(migrated)
            # Committed: from here the batch is durable, and it becomes visible to queries at once.
            with g.lock.write():
                try:
                    g.apply_enroll(ids, new_labels, new_vectors)
                except Exception:
                    log.exception("gallery %r: applying an enroll failed; rebuilding from SQLite", name)
                    g.rebuild()
            self._maintain(g)
        out: list[Enrolled] = []
        new_id = dict(zip(new_rows.tolist(), ids.tolist(), strict=True))
        for i in range(n):
            if i in new_id:
                out.append(Enrolled(new_id[i], cids[i], labels[i], True))
            else:
                stored = existing[cids[i]]  # type: ignore[index]
                out.append(Enrolled(stored.id, cids[i], stored.label, False))
        return out

    def stored_client_ids(self, name: str, client_ids: Sequence[str | None]) -> dict[str, StoredId]:
        """client id -> StoredId (stored id, label, image digest) for those of `client_ids` already
        stored in gallery `name`.

        A plain read, for callers that want to skip work (decoding, embedding) for items already stored.
        It may be out of date by the time the caller acts on it; `enroll` stays the authority and never
        stores a client id twice.
        """
        g = self._gallery(name)
        wanted = sorted({c for c in client_ids if c})
        return self.db.existing_client_ids(None, g.id, wanted) if wanted else {}

    def delete_items(self, name: str, *, ids: Sequence[int] = (), client_ids: Sequence[str] = ()) -> int:
        """Delete items by stored id and/or client id; returns how many were removed.

        Ids and client ids the gallery does not hold are not an error (the API contract: a re-sent
        delete is harmless); they count for nothing.
        """
        g = self._gallery(name)
        ids = list(ids)
        client_ids = list(client_ids)
        if not ids and not client_ids:
            raise InvalidArgument("delete_items needs item ids or client ids")
        if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in ids):
            raise InvalidArgument("item ids must be integers")
        if any(not isinstance(c, str) or not c for c in client_ids):
            raise InvalidArgument("client ids must be non-empty strings")
        return self._delete(g, lambda conn: self.db.resolve_items(conn, g.id, ids, client_ids))

    def delete_class(self, name: str, label: str) -> int:
        """Delete every item of a class; returns how many. NotFound when the gallery has no such class."""
        g = self._gallery(name)
        check_label(label)

        def resolve(conn):
            found = self.db.class_ids(conn, g.id, label)
            if not len(found):
                raise NotFound(f"gallery {name!r} has no class {label!r}")
            return found

        return self._delete(g, resolve)

    def _delete(self, g: Gallery, resolve) -> int:
        # The write lock is held across the SQLite transaction so that no query reads SQLite rows
        # that disagree with its index (see the module docstring).
        with self._writer, g.lock.write():
            self._still_there(g)
            with self.db.transaction() as conn:
                item_ids = resolve(conn)
                if not len(item_ids):
                    return 0
                vectors = self.db.vectors_of_ids(conn, item_ids, g.dim)
                images = self.db.images_of(conn, ids=item_ids)
                unmigrated = self.db.delete_ids(conn, g.id, item_ids)
                self.db.drop_unnamed_images(conn, images)
            g.count_migrated(-unmigrated)
            try:
                g.apply_delete(item_ids, vectors)
            except Exception:
                log.exception("gallery %r: applying a delete failed; rebuilding from SQLite", g.name)
                g.rebuild()
        with self._writer:
            self._maintain(g)
        return len(item_ids)

    def _maintain(self, g: Gallery) -> None:
        """Retrain IVF, compact HNSW, snapshot, when due. Caller holds the writer mutex, not the gallery lock.

        Runs after a change was committed and applied, so it never fails the caller: a failure is
        logged and the gallery keeps answering from its current index (still correct, maybe slower).
        """
        if g.deleted:
            return
        if g.needs_new_index:
            try:
                fresh = g.fresh_index()  # queries continue on the old index meanwhile
            except Exception:
                log.exception("gallery %r: building a new index failed; keeping the current one", g.name)
                g.postpone_new_index()  # the next change that calls for it tries again
            else:
                with g.lock.write():
                    g.replace_index(fresh)
        every = self.settings.snapshot_after_changes
        if every and g.changes >= every:
            try:
                with g.lock.read():
                    g.write_snapshot(self._snapshots)
            except Exception:
                log.exception("gallery %r: writing a snapshot failed", g.name)

    # ------------------------------------------------------------------ reads
    def list_classes(self, name: str, *, page_size: int = DEFAULTS.page_size, page_token: str = "") -> ClassPage:
        """Classes with their item counts, by label, a page at a time; an empty next token ends."""
        g = self._gallery(name)
        check_k(page_size, LIMITS.page_size, "page_size")
        after = pages.after_key(page_token, pages.classes_of(name))
        with g.lock.read():
            self._still_there(g)
            counts = g.class_counts()
        page, token = pages.page_of(sorted(counts), page_size, after, pages.classes_of(name))
        return ClassPage(tuple(ClassCount(lb, counts[lb]) for lb in page), token)

    def _query_setup(self, name: str, vectors: np.ndarray, fingerprint: str | None,
                     labels: Sequence[str] | None) -> tuple[Gallery, np.ndarray, list[str] | None]:
        g = self._gallery(name)
        check_fingerprint(fingerprint, g.fingerprint, name)
        queries = check_vectors(vectors, g.dim, name, what="query vectors")
        check_query_count(len(queries), self.settings.max_queries)
        if labels is not None:
            if isinstance(labels, str):
                raise InvalidArgument("labels must be a sequence of strings, not one string")
            labels = [check_label(lb, where=f"label restriction {i}: ") for i, lb in enumerate(labels)]
            if not labels:
                raise InvalidArgument("the label restriction is empty")
        return g, queries, labels

    def _check_restriction(self, g: Gallery, labels: list[str] | None) -> None:
        """Caller holds the read lock."""
        self._still_there(g)
        if g.item_count == 0:
            raise FailedPrecondition(f"gallery {g.name!r} is empty: enroll images into it first")
        if labels is not None:
            for lb in labels:
                if not g.has_class(lb):
                    raise NotFound(f"gallery {g.name!r} has no class {lb!r}")

    def search(self, name: str, vectors: np.ndarray, *, k: int, labels: Sequence[str] | None = None,
               fingerprint: str | None = None) -> list[list[Neighbor]]:
        """The k nearest stored items to each query row (float32 (n, dim)), nearest first."""
        g, queries, labels = self._query_setup(name, vectors, fingerprint, labels)
        k = check_k(k, self.settings.max_k)
        with g.lock.read():
            self._check_restriction(g, labels)
            hits = g.search(queries, k, labels)
            details = g.item_details([h[0] for row in hits for h in row])
            names = g.class_labels()
        return [
            [Neighbor(i, names[s], d, *details.get(i, (None, {}))) for i, s, d in row] for row in hits
        ]

    def _scoring(self, g: Gallery, scoring: Scoring | None, mean_k: int | None) -> tuple[Scoring, int]:
        try:
            scoring = Scoring(scoring) if scoring is not None else g.scoring
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from exc
        mean_k = check_k(mean_k, self.settings.max_k, "mean_k") if mean_k is not None else g.mean_k
        return scoring, mean_k

    def identify(self, name: str, vectors: np.ndarray, *, policy: ThresholdPolicy, k: int = DEFAULTS.identify_k,
                 scoring: Scoring | None = None, mean_k: int | None = None,
                 labels: Sequence[str] | None = None, threshold: float | None = None,
                 target_far: float | None = None, fingerprint: str | None = None) -> list[Identification]:
        """Rank the gallery's classes for each query row (float32 (n, dim)); decide a label or unknown.

        Candidates are ranked by class distance (ascending, Euclidean); the decision is the first
        candidate when its distance is <= the threshold in force, else None (unknown).
        """
        g, queries, labels = self._query_setup(name, vectors, fingerprint, labels)
        k = check_k(k, self.settings.max_k)
        scoring, mean_k = self._scoring(g, scoring, mean_k)
        thr = policy.resolve(gallery_threshold=g.threshold, threshold=threshold, target_far=target_far)
        with g.lock.read():
            self._check_restriction(g, labels)
            ranked = g.rank(queries, k, scoring, mean_k, labels)
            names = g.class_labels()
        out = []
        for r in ranked:
            probs = policy.probability(r.distances)
            cands = tuple(
                Candidate(
                    names[int(s)], float(d), None if probs is None else float(probs[j]),
                    r.nearest_ids[j] if r.nearest_ids else (),
                )
                for j, (s, d) in enumerate(zip(r.slots, r.distances, strict=True))
            )
            label = cands[0].label if cands and cands[0].distance <= thr.distance else None
            margin = cands[1].distance - cands[0].distance if len(cands) >= 2 else None
            out.append(Identification(label, cands, thr, margin))
        return out

    def verify_class(self, name: str, vectors: np.ndarray, labels: Sequence[str], *,
                     policy: ThresholdPolicy, scoring: Scoring | None = None, mean_k: int | None = None,
                     threshold: float | None = None, target_far: float | None = None,
                     fingerprint: str | None = None, cohort: bool = False) -> list[Verification]:
        """Is query row i (float32 (n, dim)) of class labels[i]? The class distance against the threshold.

        With `cohort` the score is the class distance normalized by the distance to the nearest other
        class (`cohort_normalized`), which only a threshold given for it can judge (`threshold`, else the
        gallery's cohort threshold): it has no calibrated false-accept rate or probability."""
        g, queries, _ = self._query_setup(name, vectors, fingerprint, None)
        labels = check_labels(labels, len(queries))
        scoring, mean_k = self._scoring(g, scoring, mean_k)
        if cohort:
            if target_far is not None:
                raise InvalidArgument("a cohort-normalized score has no false-accept rate to aim at: give a "
                                      "threshold for it", field="target_far")
            thr = _cohort_threshold(g, threshold)
        else:
            thr = policy.resolve(gallery_threshold=g.threshold, threshold=threshold, target_far=target_far)
        with g.lock.read():
            self._check_restriction(g, sorted(set(labels)))
            distances = g.class_distances(queries, labels, scoring, mean_k)
            if cohort:
                if g.classes.n_classes < 2:
                    raise FailedPrecondition(
                        f"gallery {name!r} holds one class: cohort normalization compares a probe with the other "
                        "enrolled classes, so it needs two classes or more")
                distances = cohort_normalized(distances, g.nearest_other_class(queries, labels, scoring, mean_k))
        probs = None if cohort else policy.probability(distances)
        return [
            Verification(bool(d <= thr.distance), float(d), thr, None if probs is None else float(probs[i]))
            for i, d in enumerate(distances)
        ]

    # ------------------------------------------------------------------ migration to another model
    def start_migration(self, name: str, *, fingerprint: str, dim: int) -> GalleryInfo:
        """Record that gallery `name` moves to the model `fingerprint` (vectors of `dim`).

        FailedPrecondition when the gallery keeps no images, holds items without one, is already bound
        to that model or is moving to another. Asking again for the migration in progress (or one that
        failed: it starts over) is not an error.
        """
        g = self._gallery(name)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= LIMITS.max_dim:
            raise InvalidArgument(f"dim must be an integer in [1, {LIMITS.max_dim}], got {dim!r}")
        with self._writer:
            self._still_there(g)
            if not g.keep_images:
                raise FailedPrecondition(
                    f"gallery {name!r} does not keep its images, so it cannot be embedded again with another "
                    "model: create a gallery with keep_images and enroll its images again")
            if g.fingerprint == fingerprint:
                raise FailedPrecondition(f"gallery {name!r} is already bound to model {fingerprint!r}")
            if g.migration is not None and not g.migration.error:
                if g.migration.fingerprint == fingerprint:
                    return self._info(g)
                raise FailedPrecondition(f"gallery {name!r} is moving to model {g.migration.fingerprint!r} "
                                         "already: wait for it to complete")
            missing = self.db.count_without_image(g.id)
            if missing:
                raise FailedPrecondition(
                    f"gallery {name!r} holds {missing} items without a kept image (enrolled as vectors): they "
                    "cannot be embedded again; delete them or enroll their images")
            with self.db.transaction() as conn:
                migration = self.db.start_migration(conn, g.id, fingerprint, dim)
            g.set_migration(migration, 0)
        log.info("gallery %r: moving to model %s (%d items)", name, fingerprint, g.item_count)
        return self._info(g)

    def migration_todo(self, name: str, limit: int) -> list[tuple[int, str | None]]:
        """(item id, kept image hash) of up to `limit` items still to embed with the new model."""
        g = self._gallery(name)
        return self.db.items_to_migrate(g.id, limit)

    def live_items(self, name: str, ids: Sequence[int]) -> set[int]:
        """Those of `ids` that gallery `name` still holds."""
        g = self._gallery(name)
        return {int(i) for i in self.db.live_ids(g.id, ids)}

    def kept_image(self, key: str) -> bytes:
        """The bytes of a kept image (`images.decode` gives the payload back)."""
        return self.db.image(key)

    def add_migrated(self, name: str, fingerprint: str, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Store the new model's vectors (float32 (n, dim)) of items (those deleted meanwhile are
        skipped); returns how many were stored. ModelChanged when the gallery no longer migrates to
        `fingerprint`."""
        g = self._gallery(name)
        with self._writer:
            self._still_there(g)
            migration = self._moving_to(g, fingerprint)
            vectors = check_vectors(vectors, migration.dim, name)
            with self.db.transaction() as conn:
                stored = self.db.insert_migrated(conn, g.id, np.asarray(ids, dtype=np.int64), vectors)
            g.count_migrated(stored)
        return stored

    @staticmethod
    def _moving_to(g: Gallery, fingerprint: str):
        """g's running migration to model `fingerprint`; ModelChanged when it is not moving there."""
        migration = g.migration
        if migration is None or migration.fingerprint != fingerprint or migration.error:
            raise ModelChanged(f"gallery {g.name!r} is not moving to model {fingerprint!r}")
        return migration

    def fail_migration(self, name: str, fingerprint: str, error: str) -> None:
        """Stop a migration on an error: kept (GetGallery shows it), the gallery answers as before."""
        g = self._gallery(name)
        with self._writer:
            self._still_there(g)
            if g.migration is None or g.migration.fingerprint != fingerprint:
                return
            with self.db.transaction() as conn:
                self.db.fail_migration(conn, g.id, error)
            g.fail_migration(error)
        log.error("gallery %r: moving to model %s failed: %s", name, fingerprint, error)

    def cancel_migration(self, name: str) -> GalleryInfo:
        """Stop gallery `name`'s migration (running, waiting or failed) and drop the vectors it made: the
        gallery stays as it was before the migration started. FailedPrecondition when it has none. The
        migration's thread, if one runs, gets ModelChanged at its next batch and ends."""
        g = self._gallery(name)
        with self._writer:
            self._still_there(g)
            if g.migration is None:
                raise FailedPrecondition(f"gallery {name!r} is not moving to another model (a migration that "
                                         "completed has switched it)")
            fingerprint = g.migration.fingerprint
            with self.db.transaction() as conn:
                dropped = self.db.cancel_migration(conn, g.id)
            g.set_migration(None)
        log.info("gallery %r: its move to model %s was cancelled (%d vectors of that model dropped)",
                 name, fingerprint, dropped)
        return self._info(g)

    def finish_migration(self, name: str, fingerprint: str) -> bool:
        """Switch gallery `name` to the model it migrates to, when every item has its new vector.

        Returns False (nothing done) while items remain. The new model's gallery (index and class
        table) is built from the migrated vectors under the writer mutex only, so queries go on
        against the old one meanwhile; then, under the old one's write lock, its snapshot is removed,
        the switch commits (items take their new vectors, the gallery its new model, its threshold
        overrides are dropped) and the new gallery replaces it. A call that still holds the old one
        gets ModelChanged and is retried by the engine.
        """
        from dataclasses import replace

        from . import snapshot as snapshots

        g = self._gallery(name)
        with self._writer:
            self._still_there(g)
            migration = self._moving_to(g, fingerprint)
            if self.db.items_to_migrate(g.id, 1):
                return False
            row = replace(g.row, fingerprint=fingerprint, dim=migration.dim, threshold=None, cohort_threshold=None)
            fresh = Gallery(row, self.db, self.settings.index, self.settings.limits, self.gpu)
            fresh.rebuild(items=lambda: self.db.iter_migrated(g.id, migration.dim),
                          sample=lambda n: self.db.sample_migrated(g.id, migration.dim, n))
            with g.lock.write():
                # Before the commit: a crash after it must not find the old model's snapshot.
                snapshots.remove(self._snapshots, g.id)
                with self.db.transaction() as conn:
                    self.db.finish_migration(conn, g.id, fingerprint, migration.dim)
                g.retire()
                with self._registry:
                    self._galleries[name] = fresh
            self._maintain(fresh)
        log.info("gallery %r: switched to model %s (%d items)", name, fingerprint, fresh.item_count)
        return True

    def rebuild_index(self, name: str) -> None:
        """Rebuild a gallery's index from SQLite (e.g. to retrain IVF at its current size)."""
        g = self._gallery(name)
        with self._writer, g.lock.write():
            self._still_there(g)
            g.rebuild()


__all__ = ["GalleryStore", "StoreSettings"]


def _cohort_threshold(g: Gallery, threshold: float | None) -> Threshold:
    """The threshold of a cohort-normalized call: the request's, else the gallery's cohort threshold."""
    if threshold is not None:
        return Threshold(check_threshold(threshold), ThresholdSource.REQUEST, None)
    if g.row.cohort_threshold is not None:
        return Threshold(g.row.cohort_threshold, ThresholdSource.GALLERY, None)
    raise InvalidArgument(
        f"a cohort-normalized score is not on the model's distance scale: give a threshold for it, or create "
        f"the gallery with a cohort threshold (gallery {g.name!r} has none)", field="threshold")
