"""One open gallery in memory: its FAISS index, class table and lock, and the queries over them.

SQLite holds the truth; this object holds what is derived from it (and nothing per item but numpy
rows). The store commits a change to SQLite first and then applies it here under the write side of
`lock`; queries run under the read side, so a query sees a committed batch wholly or not at all.
Methods say which side of the lock their caller must hold.

Distances returned are Euclidean, smaller = more alike, and exact: FAISS's float32 distances only
pick candidates, whose distances are then recomputed in float64 from the stored vectors
(`scoring.exact_distances`) and re-ranked (ties by id), so an answer does not depend on the batch a
query shared. A search goes deeper until the float32 order cannot hide a nearer item (see
`scoring.unseen_bound`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from twinsearch.client.types import IndexKind, IndexSpec, Scoring

from . import snapshot
from .classes import ClassTable
from .database import Database, GalleryRow
from .index import GpuContext, IndexParams, VectorIndex, auto_nlist, flat_rows
from .rwlock import ReadWriteLock
from .scoring import (
    ClassScores,
    class_distance,
    exact_distances,
    rank_prototypes,
    score_neighbors,
    unseen_bound,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchLimits:
    approx_max_depth: int = 8192     # deepest search on IVF/HNSW when proving a class ranking
    compact_min_dead: int = 1024     # compact tombstones once there are this many ...
    compact_dead_fraction: float = 0.1  # ... and they are this fraction of the index
    ivf_train_sample: int = 64       # training vectors per IVF cell (at most): k-means time grows with it


EXACT_CHUNK = 1 << 15  # (query, candidate) pairs recomputed at once: 32 MiB of float64 at dim 128


class _FlatView:
    """An exact throw-away index over a subset of items (a label restriction)."""

    exact = True

    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        self.index = faiss.IndexIDMap(faiss.IndexFlatL2(vectors.shape[1]))
        if len(ids):
            self.index.add_with_ids(vectors, ids)
        self.ntotal = len(ids)
        self.max_depth = max(1, self.ntotal)
        self._order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._order]
        v = vectors.astype(np.float64)
        self.max_sq_norm = float(np.einsum("ij,ij->i", v, v).max()) if len(v) else 0.0

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, max(1, min(depth, self.max_depth)))

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored float32 vectors of ids in the view (the flat index's rows: no copy kept beside it)."""
        rows = flat_rows(faiss.downcast_index(self.index.index))
        return rows[self._order[np.searchsorted(self._sorted_ids, ids)]]


class _IndexView:
    """The gallery's own index, with its depth limits."""

    def __init__(self, index: VectorIndex, limits: SearchLimits, fallback):
        self._index = index
        self._fallback = fallback  # ids -> vectors from SQLite, where the index cannot give them
        self.exact = index.exact
        self.ntotal = index.ntotal
        self.max_depth = index.max_depth if self.exact else min(index.max_depth, limits.approx_max_depth)
        self.max_sq_norm = index.max_sq_norm

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(queries, min(depth, self.max_depth))

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        found = self._index.vectors(ids)
        return self._fallback(ids) if found is None else found


@dataclass(frozen=True)
class _Candidates:
    """One search, recomputed: rows are queries, columns the FAISS result positions."""

    ids: np.ndarray       # int64 (n, depth), -1 past the end
    slots: np.ndarray     # int64 (n, depth), -1 for padding and deleted items
    dist: np.ndarray      # float64 (n, depth): exact Euclidean distances of live items, inf elsewhere
    bound: np.ndarray     # float64 (n,): lower bound on the exact distance of any item not returned
    complete: np.ndarray  # bool (n,): every item of the view was returned


class Gallery:
    def __init__(self, row: GalleryRow, db: Database, params: IndexParams, limits: SearchLimits,
                 gpu: GpuContext | None):
        self.row = row
        self.spec = IndexSpec(**{**row.index_spec, "kind": IndexKind(row.index_spec["kind"])})
        self.scoring = Scoring(row.scoring)
        self.db = db
        self.limits = limits
        self._index = VectorIndex(row.dim, self.spec, params, gpu)
        self._classes = ClassTable(row.dim)
        self.lock = ReadWriteLock()
        self.deletions = row.deletions  # SQLite's deletion counter as reflected in memory
        self.applied_max_id = 0         # largest item id applied here; SQLite rows above it are not yet
        self._dirty = False              # changed since the last snapshot
        self._changes = 0                # items enrolled or deleted since the last snapshot
        self._needs_new_index = False    # IVF (re)training or HNSW compaction is due: see `fresh_index`
        self._deleted = False            # set when the gallery is deleted while a caller still holds it
        self._retired = False            # set when a migration replaced it while a caller still holds it
        self._migration = None           # database.MigrationRow while moving to another model
        self._migrated = 0               # items with a vector from the new model so far

    # ------------------------------------------------------------------ state, read-only outside
    # Other modules read these; only this class's methods below change them.
    @property
    def index(self) -> VectorIndex:
        return self._index

    @property
    def classes(self) -> ClassTable:
        return self._classes

    @property
    def dirty(self) -> bool:
        """Changed since the last snapshot."""
        return self._dirty

    @property
    def changes(self) -> int:
        """Items enrolled or deleted since the last snapshot."""
        return self._changes

    @property
    def needs_new_index(self) -> bool:
        """IVF (re)training or HNSW compaction is due: see `fresh_index` and `replace_index`."""
        return self._needs_new_index

    @property
    def deleted(self) -> bool:
        """The gallery was deleted (`mark_deleted`) while a caller still held it."""
        return self._deleted

    @property
    def retired(self) -> bool:
        """A migration replaced it (`retire`) while a caller still held it."""
        return self._retired

    @property
    def migration(self):
        """The database.MigrationRow of its move to another model, None when not moving."""
        return self._migration

    @property
    def migrated(self) -> int:
        """Items with a vector from the model it moves to, so far."""
        return self._migrated

    @property
    def id(self) -> int:
        return self.row.id

    def settings_changed(self, row: GalleryRow) -> None:
        """Take `row`'s decision settings (threshold, cohort threshold, scoring, mean_k), as committed."""
        self.scoring = Scoring(row.scoring)
        self.row = row

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def dim(self) -> int:
        return self.row.dim

    @property
    def fingerprint(self) -> str:
        return self.row.fingerprint

    @property
    def keep_images(self) -> bool:
        return bool(self.row.keep_images)

    @property
    def mean_k(self) -> int:
        return self.row.mean_k

    @property
    def threshold(self) -> float | None:
        return self.row.threshold

    @property
    def item_count(self) -> int:
        return self._classes.n_items

    @property
    def class_count(self) -> int:
        return self._classes.n_classes

    @property
    def on_gpu(self) -> bool:
        return self._index.on_gpu

    # ------------------------------------------------------------------ reads (caller holds the read lock)
    def class_counts(self) -> dict[str, int]:
        """label -> item count of every class that holds items."""
        t = self._classes
        return {t.labels[s]: int(t.counts[s]) for s in t.live_slots()}

    def has_class(self, label: str) -> bool:
        slot = self._classes.slot_of.get(label)
        return slot is not None and self._classes.counts[slot] > 0

    def class_labels(self) -> list[str]:
        """The label of each class slot (the slots `rank` and `search` answer with): the table's own list,
        to read, not to change (slots only grow, so it stays right for slots read under the lock)."""
        return self._classes.labels

    def item_details(self, ids) -> dict:
        """id -> (client id, metadata) of stored items, from SQLite."""
        return self.db.item_details(self.id, ids)

    # ------------------------------------------------------------------ state changes
    def mark_deleted(self) -> None:
        """The gallery is gone: a caller still holding it gets NotFound. Caller holds the write lock."""
        self._deleted = True

    def retire(self) -> None:
        """A migrated gallery replaced this one: a caller still holding it retries. Caller holds the write lock."""
        self._retired = True

    def replace_index(self, fresh: VectorIndex) -> None:
        """Swap in an index built by `fresh_index`. Caller holds the write lock."""
        self._index = fresh
        self._needs_new_index = False
        self._dirty = True

    def postpone_new_index(self) -> None:
        """Building a new index failed: keep the current one; the next change that calls for one retries."""
        self._needs_new_index = False

    def set_migration(self, migration, migrated: int = 0) -> None:
        """Record the move to another model (a database.MigrationRow, or None) and the items already
        migrated. Caller holds the store's writer mutex."""
        self._migration = migration
        self._migrated = int(migrated)

    def count_migrated(self, n: int) -> None:
        """`n` more items (negative: fewer, deleted) have a vector from the model it moves to."""
        self._migrated += int(n)

    def fail_migration(self, error: str) -> None:
        """The migration stopped on `error`: kept, shown, and retried when asked again."""
        m = self._migration
        self._migration = type(m)(m.gallery_id, m.fingerprint, m.dim, error)

    # ------------------------------------------------------------------ loading (no lock needed: not shared yet)
    def load(self, folder: Path) -> str:
        """Load from the snapshot and catch up with SQLite, or rebuild. Returns "snapshot", "caught up" or "rebuilt"."""
        try:
            how = self._load_snapshot(folder)
        except (snapshot.SnapshotError, ValueError, RuntimeError, KeyError) as exc:
            stats = self.db.stats(self.id)
            if stats.count or stats.deletions:
                log.warning("gallery %r: %s; rebuilding its index from SQLite", self.name, exc)
            else:  # a gallery never enrolled into has nothing to snapshot: building it is not a recovery
                log.debug("gallery %r: %s; empty, built from nothing", self.name, exc)
            self.rebuild()
            return "rebuilt"
        return how

    def _load_snapshot(self, folder: Path) -> str:
        header, arrays, index_path = snapshot.read(folder, self.id)
        if header.get("dim") != self.dim or header.get("index_spec") != self.row.index_spec:
            raise snapshot.SnapshotError("snapshot was taken with another dimension or index configuration")
        # Snapshots from before models had names carry no fingerprint; a migration removes the old
        # model's snapshot before it commits, so those are of the gallery's model.
        if header.get("fingerprint", self.row.fingerprint) != self.row.fingerprint:
            raise snapshot.SnapshotError("snapshot holds vectors of another model")
        stats = self.db.stats(self.id)
        since = stats.deletions - int(header["deletions"])  # items deleted after the snapshot was taken
        if since < 0:
            raise snapshot.SnapshotError("snapshot is ahead of SQLite (it counts more deletions)")
        table = ClassTable.from_arrays(self.dim, arrays)
        if table.max_id > header["max_id"]:
            raise snapshot.SnapshotError("snapshot arrays disagree with its header")
        # SQLite's items up to the snapshot's max_id are the snapshot's items less those deleted since.
        # (Comparing largest ids instead would fail whenever the newest item was deleted before the
        # snapshot: its id stays the snapshot's max_id but is gone from SQLite, in both deletion counts.)
        covered = self.db.count_items(self.id, int(header["max_id"]))
        if covered > table.n_items:
            raise snapshot.SnapshotError("snapshot lacks items SQLite holds below its max_id")
        if covered < table.n_items - since:
            raise snapshot.SnapshotError("snapshot is ahead of SQLite (it holds items SQLite does not)")
        self.index.load_from(str(index_path), int(header["nlist"]), int(header["trained_at"]))
        held = self.index.ids()
        if len(held) != self.index.ntotal or not np.isin(table.item_ids, held).all():
            raise snapshot.SnapshotError("snapshot index does not hold the snapshot's items")
        self._classes = table
        self.applied_max_id = int(header["max_id"])
        caught_up = False
        if header["deletions"] != stats.deletions:
            # Items deleted since: those the snapshot holds that SQLite no longer has.
            alive = self.db.all_ids(self.id, header["max_id"])
            if len(np.setdiff1d(alive, table.item_ids, assume_unique=True)):
                raise snapshot.SnapshotError("snapshot lacks items SQLite holds below its max_id")
            gone = np.setdiff1d(table.item_ids, alive, assume_unique=True)
            if len(gone):
                self._forget(gone, self._vectors_from_index(gone))
            self._changes += len(gone)
            caught_up = True
        for ids, labels, vectors in self.db.iter_items(self.id, self.dim, after_id=int(header["max_id"])):
            self.index.add(vectors, ids)
            self.classes.add(ids, labels, vectors)
            self.applied_max_id = int(ids[-1])
            self._changes += len(ids)
            caught_up = True
        self.deletions = stats.deletions
        self._dirty = caught_up
        self._after_change()
        return "caught up" if caught_up else "snapshot"

    def _vectors_from_index(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of ids the index holds (SQLite no longer has them): float32 (m, dim)."""
        return self.index.vectors(ids, copy_ok=True)

    def _vectors_from_sqlite(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of live ids, float32 (m, dim), in order. Caller holds the read lock."""
        return self.db.vectors_of_ids(None, ids, self.dim)

    def rebuild(self, items=None, sample=None) -> None:
        """Rebuild index and class table from SQLite. Caller holds the write lock (or owns the gallery).

        `items` (a callable returning (ids, labels, vectors) chunks by id) and `sample` (n -> vectors
        for IVF training) read other vectors than the items' own: a migration builds the new model's
        gallery from its migrated vectors before the switch commits."""
        stats = self.db.stats(self.id)
        self._index = self._new_index(stats.count, sample)
        self._classes = ClassTable(self.dim)
        chunks = items() if items is not None else self.db.iter_items(self.id, self.dim)
        for ids, labels, vectors in chunks:
            self.index.add(vectors, ids)
            self.classes.add(ids, labels, vectors)
        self.deletions = stats.deletions
        self.applied_max_id = stats.max_id
        self._dirty = True
        self._needs_new_index = False
        log.info("gallery %r: index rebuilt from SQLite with %d items", self.name, self.classes.n_items)

    def _new_index(self, count: int, sample=None) -> VectorIndex:
        """An empty index for a gallery of `count` items, IVF trained on SQLite's vectors when due
        (`sample(n)`: where training vectors come from instead)."""
        index = VectorIndex(self.dim, self.spec, self.index.params, self.index.gpu)
        training = None
        if index.wants_training(count):
            nlist = self.spec.nlist or auto_nlist(count)
            n = nlist * self.limits.ivf_train_sample
            training = sample(n) if sample is not None else self.db.sample_vectors(self.id, self.dim, n)
        index.reset(training, count)
        return index

    def fresh_index(self) -> VectorIndex:
        """A new index of the live items, built from SQLite (IVF retrained, HNSW without tombstones).

        Caller holds the store's writer mutex but not this gallery's lock: queries go on with the old
        index meanwhile, and SQLite cannot change under the build. Swap it in under the write lock.
        """
        n = self.classes.n_items
        index = self._new_index(n) if self.index.wants_training(n) else self.index.empty_like()
        for ids, _, vectors in self.db.iter_items(self.id, self.dim):
            index.add(vectors, ids)
        log.info("gallery %r: new %s index built with %d items", self.name, self.spec.kind.value, index.ntotal)
        return index

    def write_snapshot(self, folder: Path) -> None:
        """Caller holds at least the read lock."""
        header = {
            "fingerprint": self.row.fingerprint,
            "dim": self.dim,
            "index_spec": self.row.index_spec,
            "max_id": self.applied_max_id,
            "deletions": self.deletions,
            "nlist": self.index.nlist,
            "trained_at": self.index.trained_at,
        }
        snapshot.write(folder, self.id, self.index.serialize_to, self.classes.to_arrays(), header)
        self._dirty = False
        self._changes = 0

    # ------------------------------------------------------------------ changes (caller holds the write lock)
    def apply_enroll(self, ids: np.ndarray, labels: Sequence[str], vectors: np.ndarray) -> None:
        self.index.add(vectors, ids)
        self.classes.add(ids, labels, vectors)
        if len(ids):
            self.applied_max_id = max(self.applied_max_id, int(ids.max()))
        self._dirty = True
        self._changes += len(ids)
        self._after_change()

    def apply_delete(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._forget(ids, vectors)
        self.deletions += len(ids)
        self._dirty = True
        self._changes += len(ids)
        self._after_change()

    def _forget(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        # The index keeps the vectors as tombstones until compaction; the class table drops them now.
        self.classes.remove(ids, vectors)

    def _after_change(self) -> None:
        n = self.classes.n_items
        if self.index.wants_training(n):
            self._needs_new_index = True
            return
        dead = self.index.ntotal - n
        if dead >= self.limits.compact_min_dead and dead >= self.limits.compact_dead_fraction * self.index.ntotal:
            if self.index.can_remove():
                gone = np.setdiff1d(self.index.ids(), self.classes.item_ids)
                self.index.compact(gone)
                log.info("gallery %r: removed %d deleted vectors from its index", self.name, len(gone))
            else:
                self._needs_new_index = True

    # ------------------------------------------------------------------ queries (caller holds the read lock)
    def _view(self, labels: Sequence[str] | None):
        """(view, n_classes) for a query: the gallery index, or an exact view of the restricted labels."""
        if labels is None:
            return _IndexView(self.index, self.limits, self._vectors_from_sqlite), self.classes.n_classes
        slots = self.classes.slots_of_labels(labels)
        names = [self.classes.labels[s] for s in slots]
        ids, _, vectors = self.db.vectors_of_labels(self.id, names, self.dim, self.applied_max_id)
        return _FlatView(ids, vectors), len(slots)

    def search(self, queries: np.ndarray, k: int, labels: Sequence[str] | None = None
               ) -> list[list[tuple[int, int, float]]]:
        """k nearest live items per query: lists of (id, class slot, distance) ascending."""
        view, _ = self._view(labels)
        dead = max(view.ntotal - self.classes.n_items, 0) if labels is None else 0
        # Room beyond k, so that the k-th is usually proven at the first depth (see the loop).
        depth = min(2 * k + 16 + min(dead, 4 * k + 64), view.max_depth)
        out: list[list[tuple[int, int, float]] | None] = [None] * len(queries)
        todo = np.arange(len(queries))
        while len(todo):
            c = self._candidates(view, queries[todo], depth)
            last = depth >= view.max_depth
            keep = []
            for j, qi in enumerate(todo):
                live = np.flatnonzero(c.slots[j] >= 0)
                live = live[np.lexsort((c.ids[j, live], c.dist[j, live]))]
                # The k-th is proven when nothing unseen can be as near (ties would go by id).
                proven = bool(c.complete[j]) or (len(live) >= k and c.dist[j, live[k - 1]] < c.bound[j])
                if proven or last:
                    out[qi] = [(int(c.ids[j, p]), int(c.slots[j, p]), float(c.dist[j, p])) for p in live[:k]]
                else:
                    keep.append(j)
            todo = todo[keep]
            depth = min(depth * 4, view.max_depth)
        return out  # type: ignore[return-value]

    def _candidates(self, view, queries: np.ndarray, depth: int) -> _Candidates:
        """Search `view` at `depth` and recompute the live results exactly (float64, stored vectors)."""
        fdist, ids = view.search(queries, depth)
        slots = self.classes.slots_of_ids(ids)
        dist = np.full(ids.shape, np.inf)
        rows, cols = np.nonzero(slots >= 0)
        if len(rows):
            uniq, inverse = np.unique(ids[rows, cols], return_inverse=True)
            vectors = view.vectors(uniq)
            for lo in range(0, len(rows), EXACT_CHUNK):
                r, cc, v = rows[lo:lo + EXACT_CHUNK], cols[lo:lo + EXACT_CHUNK], inverse[lo:lo + EXACT_CHUNK]
                dist[r, cc] = exact_distances(queries[r], vectors[v])
        returned = ids >= 0
        deepest = np.where(returned, fdist, -np.inf).max(axis=1)
        q = queries.astype(np.float64)
        q_sq = np.einsum("ij,ij->i", q, q)
        bound = np.array([unseen_bound(max(float(deepest[j]), 0.0), float(q_sq[j]), view.max_sq_norm, self.dim)
                          for j in range(len(queries))])
        complete = (~returned).any(axis=1) | (ids.shape[1] >= view.ntotal)
        return _Candidates(ids, slots, dist, bound, complete)

    def rank(self, queries: np.ndarray, k: int, scoring: Scoring, mean_k: int,
             labels: Sequence[str] | None = None) -> list[ClassScores]:
        """Top-k classes per query by class distance (ascending); exact for exact indexes."""
        if scoring == Scoring.PROTOTYPE:
            slots = self.classes.live_slots() if labels is None else self.classes.slots_of_labels(labels)
            top_s, top_d = rank_prototypes(queries, self.classes.means, slots, k)
            return [ClassScores(top_s[i], top_d[i], ()) for i in range(len(queries))]
        per_class = 1 if scoring == Scoring.NEAREST else mean_k
        view, n_classes = self._view(labels)
        counts = self.classes.counts
        out: list[ClassScores | None] = [None] * len(queries)
        todo = np.arange(len(queries))
        dead = max(view.ntotal - self.classes.n_items, 0) if labels is None else 0
        depth = min(max(2 * k * per_class, 32) + min(dead, 256), view.max_depth)
        while len(todo):
            c = self._candidates(view, queries[todo], depth)
            last = depth >= view.max_depth
            keep = []
            for j, qi in enumerate(todo):
                complete = bool(c.complete[j])
                scores, proven = score_neighbors(
                    c.dist[j], c.ids[j], c.slots[j], counts, bound=float(c.bound[j]), per_class=per_class,
                    k=k, n_classes=n_classes, complete_view=complete,
                )
                if proven or complete or last:
                    if not proven and not complete:
                        log.debug("gallery %r: class ranking not proven exact at depth %d", self.name, depth)
                    out[qi] = scores
                else:
                    keep.append(j)
            todo = todo[keep]
            depth = min(depth * 4, view.max_depth)
        return out  # type: ignore[return-value]

    def class_distances(self, queries: np.ndarray, labels: Sequence[str], scoring: Scoring,
                        mean_k: int) -> np.ndarray:
        """Distance from each query (n, dim) to the class named beside it: float64 (n,). Labels must be live."""
        out = np.empty(len(queries), dtype=np.float64)
        groups: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            groups.setdefault(label, []).append(i)
        if scoring == Scoring.PROTOTYPE:
            for label, rows in groups.items():
                slot = np.array([self.classes.slot_of[label]], dtype=np.int64)
                _, d = rank_prototypes(queries[rows], self.classes.means, slot, 1)
                out[rows] = d[:, 0]
            return out
        per_class = 1 if scoring == Scoring.NEAREST else mean_k
        for label, rows in groups.items():
            _, _, vectors = self.db.vectors_of_labels(self.id, [label], self.dim, self.applied_max_id)
            # The distances identify and search report for the same pairs, bit for bit.
            out[rows] = [class_distance(exact_distances(queries[i], vectors), per_class) for i in rows]
        return out

    def nearest_other_class(self, queries: np.ndarray, labels: Sequence[str], scoring: Scoring,
                            mean_k: int) -> np.ndarray:
        """Distance from each query (n, dim) to the nearest live class other than the one named beside it
        (the cohort of `verify_class(cohort=True)`): float64 (n,). Needs two live classes or more."""
        ranked = self.rank(queries, 2, scoring, mean_k)
        out = np.empty(len(queries), dtype=np.float64)
        for i, (scores, label) in enumerate(zip(ranked, labels, strict=True)):
            other = [d for s, d in zip(scores.slots, scores.distances, strict=True) if self.classes.labels[s] != label]
            if not other:  # an approximate index found no second class near this query: rank the others alone
                rest = [self.classes.labels[s] for s in self.classes.live_slots() if self.classes.labels[s] != label]
                other = list(self.rank(queries[i:i + 1], 1, scoring, mean_k, labels=rest)[0].distances)
            out[i] = other[0]
        return out
