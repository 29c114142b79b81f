"""The SQLite file that is the gallery store's source of truth.

One row per gallery and one row per enrolled item: stored id (never reused: AUTOINCREMENT), optional
client id (unique per gallery), label, metadata (JSON), the float32 vector as a little-endian
BLOB of dim * 4 bytes, the hash of its kept image when the gallery keeps images, and, for an image
enrolled under a client id, the digest of the image (`images.payload_digest`), so that the same client
id sent again with another image is told from a resumed run. Kept images
are rows of `images` (SHA-256 of the bytes -> the bytes, each image once however many items name it),
written in the transaction that inserts the items naming them and deleted in the one that deletes
the last item naming them: one commit, one sync, and no file that a crash could leave behind.
A gallery moving to another model has a `migrations` row, and the vectors its items have from the
new model so far are in `migrated_vectors` until the switch.

The schema grows only by additions (`_UPGRADES`, applied in order when the file is opened), so a
file written by an earlier version opens unchanged and gains the new columns and tables. The journal is WAL, so readers never block the writer or each other; with
`synchronous=FULL` a committed transaction survives a power cut, not only a process crash.

Writes go through one connection guarded by a mutex (SQLite has one writer anyway); each reading
thread gets its own connection. Nothing here knows about FAISS.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from twinsearch.client.errors import ResourceExhausted

from . import images

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5
# Stay well under SQLite's limit on bound parameters per statement.
_CHUNK = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS galleries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    dim INTEGER NOT NULL,
    index_spec TEXT NOT NULL,
    scoring TEXT NOT NULL,
    mean_k INTEGER NOT NULL,
    threshold REAL,
    -- items deleted so far: a snapshot records it, so start-up knows whether deletions happened since
    deletions INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id INTEGER NOT NULL,
    client_id TEXT,
    label TEXT NOT NULL,
    metadata TEXT,
    vector BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS items_client ON items (gallery_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_label ON items (gallery_id, label);
"""

# Schema version -> the statements that bring a file of the version before it there. Additions only.
_UPGRADES: dict[int, tuple[str, ...]] = {
    2: (
        # Galleries from before version 2 did not keep images.
        "ALTER TABLE galleries ADD COLUMN keep_images INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE items ADD COLUMN image TEXT",  # SHA-256 of the kept image; NULL: none kept
        "CREATE INDEX IF NOT EXISTS items_image ON items (image) WHERE image IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS migrations (
            gallery_id INTEGER PRIMARY KEY,
            fingerprint TEXT NOT NULL,   -- the model migrated to
            dim INTEGER NOT NULL,
            error TEXT,                  -- set when it stopped on an error
            started_at REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS migrated_vectors (
            item_id INTEGER PRIMARY KEY,
            gallery_id INTEGER NOT NULL,
            vector BLOB NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS migrated_gallery ON migrated_vectors (gallery_id)",
    ),
    3: (
        # Kept images move from one file each (`images/ab/<sha256>`, imported at open by
        # `images.import_folder`) into the database, so that storing them costs no sync of its own.
        "CREATE TABLE IF NOT EXISTS images (key TEXT PRIMARY KEY, data BLOB NOT NULL)",
    ),
    4: (
        # The default threshold of cohort-normalized verify_class calls; NULL: calls give their own.
        "ALTER TABLE galleries ADD COLUMN cohort_threshold REAL",
    ),
    5: (
        # The digest of an image enrolled under a client id (`images.payload_digest`, 16 bytes); NULL for
        # vectors, for items without a client id, and for items stored before version 5.
        "ALTER TABLE items ADD COLUMN digest BLOB",
    ),
}


@dataclass(frozen=True)
class GalleryRow:
    id: int
    name: str
    fingerprint: str
    dim: int
    index_spec: dict
    scoring: str
    mean_k: int
    threshold: float | None
    deletions: int
    keep_images: bool = False
    cohort_threshold: float | None = None


_GALLERY_COLUMNS = ("id, name, fingerprint, dim, index_spec, scoring, mean_k, threshold, deletions, keep_images, "
                    "cohort_threshold")


def _gallery_row(r: tuple) -> GalleryRow:
    """A GalleryRow from a row of `_GALLERY_COLUMNS`."""
    return GalleryRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], bool(r[9]), r[10])


class StoredId(NamedTuple):
    """An item found by its client id: its stored id, its label and its image's digest (None: unknown)."""

    id: int
    label: str
    digest: bytes | None


@dataclass(frozen=True)
class MigrationRow:
    gallery_id: int
    fingerprint: str
    dim: int
    error: str | None


@dataclass(frozen=True)
class GalleryStats:
    count: int
    max_id: int
    deletions: int


def is_disk_full(exc: BaseException) -> bool:
    """Whether a storage error means the disk is full (SQLITE_FULL, or ENOSPC from the system)."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return False


class Database:
    def __init__(self, path: Path, *, synchronous: str = "FULL", busy_timeout_s: float = 30.0,
                 writer_cache_mb: int = 64):
        self.path = Path(path)
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer = self._connect()
        # A larger page cache for the writer keeps the label and client-id index pages hot while
        # enrolling into a large gallery (about 20% more vectors/s at 300k items here).
        self._writer.execute(f"PRAGMA cache_size=-{int(writer_cache_mb) * 1024}")
        self._writer.executescript(_SCHEMA)
        self._writer.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")
        self._upgrade()
        self._closed = False

    def _upgrade(self) -> None:
        """Bring the file to SCHEMA_VERSION, one version at a time, each in one transaction."""
        (version,) = self._writer.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(version)
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema version {version}; this twinsearch knows up to "
                               f"{SCHEMA_VERSION}: upgrade twinsearch")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction() as conn:
                for statement in _UPGRADES[target]:
                    conn.execute(statement)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))
            log.info("%s: schema upgraded to version %d", self.path, target)

    def schema_version(self) -> int:
        (version,) = self._reader().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(version)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()

    # ------------------------------------------------------------------ connections
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the single writer connection, committed on normal exit.

        BEGIN IMMEDIATE takes SQLite's write lock at once, so the ids read inside stay valid. Any
        failure, the commit's included, rolls the whole transaction back. A full disk raises
        ResourceExhausted (nothing of the transaction is stored; earlier data is untouched).
        """
        with self._write_lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
            except (sqlite3.Error, OSError) as exc:
                if is_disk_full(exc):
                    raise ResourceExhausted(
                        f"the disk of the data folder {self.path.parent} is full: nothing of this call was "
                        "stored; free space on it, then retry"
                    ) from exc
                raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # After some errors (a full disk among them) SQLite has already rolled back by itself.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rolling back a failed transaction failed")

    # ------------------------------------------------------------------ galleries
    def galleries(self) -> list[GalleryRow]:
        rows = self._reader().execute(f"SELECT {_GALLERY_COLUMNS} FROM galleries ORDER BY name").fetchall()
        return [_gallery_row(r) for r in rows]

    def gallery_row(self, conn: sqlite3.Connection | None, gallery_id: int) -> GalleryRow:
        conn = conn if conn is not None else self._reader()
        return _gallery_row(conn.execute(f"SELECT {_GALLERY_COLUMNS} FROM galleries WHERE id = ?",
                                         (gallery_id,)).fetchone())

    def insert_gallery(self, conn: sqlite3.Connection, name: str, fingerprint: str, dim: int,
                       index_spec: dict, scoring: str, mean_k: int, threshold: float | None,
                       keep_images: bool = False, cohort_threshold: float | None = None) -> GalleryRow:
        cur = conn.execute(
            "INSERT INTO galleries (name, fingerprint, dim, index_spec, scoring, mean_k, threshold, created_at, "
            "keep_images, cohort_threshold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, fingerprint, dim, json.dumps(index_spec), scoring, mean_k, threshold, time.time(),
             int(keep_images), cohort_threshold),
        )
        return GalleryRow(int(cur.lastrowid), name, fingerprint, dim, index_spec, scoring, mean_k, threshold, 0,
                          bool(keep_images), cohort_threshold)

    def update_gallery(self, conn: sqlite3.Connection, row: GalleryRow) -> None:
        """Write `row`'s decision settings (threshold, cohort threshold, scoring, mean_k) to its gallery."""
        conn.execute("UPDATE galleries SET threshold = ?, cohort_threshold = ?, scoring = ?, mean_k = ? WHERE id = ?",
                     (row.threshold, row.cohort_threshold, row.scoring, row.mean_k, row.id))

    def gallery_exists(self, conn: sqlite3.Connection, name: str) -> bool:
        return conn.execute("SELECT 1 FROM galleries WHERE name = ?", (name,)).fetchone() is not None

    def delete_gallery(self, conn: sqlite3.Connection, gallery_id: int) -> int:
        n = conn.execute("DELETE FROM items WHERE gallery_id = ?", (gallery_id,)).rowcount
        conn.execute("DELETE FROM galleries WHERE id = ?", (gallery_id,))
        conn.execute("DELETE FROM migrated_vectors WHERE gallery_id = ?", (gallery_id,))
        conn.execute("DELETE FROM migrations WHERE gallery_id = ?", (gallery_id,))
        return int(n)

    def stats(self, gallery_id: int) -> GalleryStats:
        conn = self._reader()
        count, max_id = conn.execute(
            "SELECT count(*), coalesce(max(id), 0) FROM items WHERE gallery_id = ?", (gallery_id,)
        ).fetchone()
        (deletions,) = conn.execute("SELECT deletions FROM galleries WHERE id = ?", (gallery_id,)).fetchone()
        return GalleryStats(int(count), int(max_id), int(deletions))

    # ------------------------------------------------------------------ enroll
    def existing_client_ids(self, conn: sqlite3.Connection | None, gallery_id: int,
                            client_ids: Sequence[str]) -> dict[str, StoredId]:
        """client id -> StoredId for those of `client_ids` already stored in the gallery.

        `conn` is the caller's transaction, or None for a plain read on this thread's reader.
        """
        conn = conn if conn is not None else self._reader()
        found: dict[str, StoredId] = {}
        for start in range(0, len(client_ids), _CHUNK):
            part = list(client_ids[start:start + _CHUNK])
            marks = ",".join("?" * len(part))
            for cid, item_id, label, digest in conn.execute(
                f"SELECT client_id, id, label, digest FROM items WHERE gallery_id = ? AND client_id IN ({marks})",
                (gallery_id, *part),
            ):
                found[cid] = StoredId(int(item_id), label, None if digest is None else bytes(digest))
        return found

    def insert_items(self, conn: sqlite3.Connection, gallery_id: int, labels: Sequence[str],
                     vectors: np.ndarray, client_ids: Sequence[str | None],
                     metadata: Sequence[dict[str, str]], images: Sequence[str | None] | None = None,
                     digests: Sequence[bytes | None] | None = None) -> np.ndarray:
        """Insert rows inside the caller's transaction; returns their new ids (int64, increasing).

        `images`: the hash of each item's kept image (None: none kept); `digests`: each item's image
        digest (None: none, as for vectors)."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        first = (int(row[0]) if row else 0) + 1
        ids = np.arange(first, first + len(labels), dtype=np.int64)
        conn.executemany(
            "INSERT INTO items (id, gallery_id, client_id, label, metadata, vector, image, digest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (int(ids[i]), gallery_id, client_ids[i], labels[i],
                 json.dumps(metadata[i]) if metadata[i] else None, vectors[i].tobytes(),
                 images[i] if images is not None else None, digests[i] if digests is not None else None)
                for i in range(len(labels))
            ),
        )
        return ids

    # ------------------------------------------------------------------ delete
    def resolve_items(self, conn: sqlite3.Connection, gallery_id: int, ids: Sequence[int],
                      client_ids: Sequence[str]) -> np.ndarray:
        """Sorted int64 stored ids of the gallery's items named by item id or client id.

        Ids and client ids the gallery does not hold are left out (deleting them is not an error).
        """
        found: set[int] = set()
        unique_ids = sorted({int(i) for i in ids})
        for start in range(0, len(unique_ids), _CHUNK):
            part = unique_ids[start:start + _CHUNK]
            marks = ",".join("?" * len(part))
            found.update(int(r[0]) for r in conn.execute(
                f"SELECT id FROM items WHERE gallery_id = ? AND id IN ({marks})", (gallery_id, *part)))
        if client_ids:
            by_client = self.existing_client_ids(conn, gallery_id, sorted(set(client_ids)))
            found.update(stored.id for stored in by_client.values())
        return np.array(sorted(found), dtype=np.int64)

    def live_ids(self, gallery_id: int, ids: Sequence[int]) -> np.ndarray:
        """Sorted ids among `ids` that the gallery holds (a plain read)."""
        return self.resolve_items(self._reader(), gallery_id, ids, [])

    def delete_ids(self, conn: sqlite3.Connection, gallery_id: int, ids: np.ndarray) -> int:
        """Delete items (and the vectors a migration made of them); returns how many of those went."""
        conn.executemany("DELETE FROM items WHERE id = ?", ((int(i),) for i in ids))
        migrated = conn.executemany("DELETE FROM migrated_vectors WHERE item_id = ?", ((int(i),) for i in ids))
        conn.execute("UPDATE galleries SET deletions = deletions + ? WHERE id = ?", (len(ids), gallery_id))
        return max(int(migrated.rowcount), 0)

    # ------------------------------------------------------------------ kept images
    def images_of(self, conn: sqlite3.Connection, *, ids: np.ndarray | None = None,
                  gallery_id: int | None = None) -> set[str]:
        """Hashes of the kept images of the given items, or of every item of a gallery."""
        if gallery_id is not None:
            return {r[0] for r in conn.execute(
                "SELECT DISTINCT image FROM items WHERE gallery_id = ? AND image IS NOT NULL", (gallery_id,))}
        found: set[str] = set()
        id_list = [int(i) for i in (ids if ids is not None else ())]
        for start in range(0, len(id_list), _CHUNK):
            part = id_list[start:start + _CHUNK]
            marks = ",".join("?" * len(part))
            found.update(r[0] for r in conn.execute(
                f"SELECT image FROM items WHERE id IN ({marks}) AND image IS NOT NULL", part))
        return found

    def put_images(self, conn: sqlite3.Connection, blobs: Sequence[bytes]) -> list[str]:
        """Store each blob (once: an image already kept is not written again); their hashes, in order."""
        keys = [images.digest(b) for b in blobs]
        conn.executemany("INSERT OR IGNORE INTO images (key, data) VALUES (?, ?)", zip(keys, blobs, strict=True))
        return keys

    def drop_unnamed_images(self, conn: sqlite3.Connection, keys: Iterable[str]) -> int:
        """Delete those of the kept images `keys` that no item names any more; returns how many."""
        key_list = sorted(set(keys))
        dropped = 0
        for start in range(0, len(key_list), _CHUNK):
            part = key_list[start:start + _CHUNK]
            marks = ",".join("?" * len(part))
            dropped += conn.execute(
                f"DELETE FROM images WHERE key IN ({marks}) "
                "AND NOT EXISTS (SELECT 1 FROM items WHERE items.image = images.key)", part).rowcount
        return dropped

    def image(self, key: str) -> bytes:
        """The bytes of a kept image; FileNotFoundError when none is kept under `key`."""
        row = self._reader().execute("SELECT data FROM images WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise FileNotFoundError(f"no kept image {key}")
        return bytes(row[0])

    def referenced_images(self) -> set[str]:
        """Every hash that some item names as its kept image."""
        return {r[0] for r in self._reader().execute("SELECT DISTINCT image FROM items WHERE image IS NOT NULL")}

    def count_without_image(self, gallery_id: int) -> int:
        (n,) = self._reader().execute(
            "SELECT count(*) FROM items WHERE gallery_id = ? AND image IS NULL", (gallery_id,)).fetchone()
        return int(n)

    # ------------------------------------------------------------------ migrations
    def migrations(self) -> dict[int, MigrationRow]:
        rows = self._reader().execute("SELECT gallery_id, fingerprint, dim, error FROM migrations").fetchall()
        return {r[0]: MigrationRow(r[0], r[1], r[2], r[3]) for r in rows}

    def start_migration(self, conn: sqlite3.Connection, gallery_id: int, fingerprint: str, dim: int) -> MigrationRow:
        """Record a migration (replacing a failed one and the vectors it had made)."""
        conn.execute("DELETE FROM migrated_vectors WHERE gallery_id = ?", (gallery_id,))
        conn.execute("INSERT OR REPLACE INTO migrations (gallery_id, fingerprint, dim, error, started_at) "
                     "VALUES (?, ?, ?, NULL, ?)", (gallery_id, fingerprint, dim, time.time()))
        return MigrationRow(gallery_id, fingerprint, dim, None)

    def fail_migration(self, conn: sqlite3.Connection, gallery_id: int, error: str) -> None:
        conn.execute("UPDATE migrations SET error = ? WHERE gallery_id = ?", (error, gallery_id))

    def cancel_migration(self, conn: sqlite3.Connection, gallery_id: int) -> int:
        """Forget a gallery's migration and the vectors it made; returns how many vectors were dropped."""
        dropped = conn.execute("DELETE FROM migrated_vectors WHERE gallery_id = ?", (gallery_id,)).rowcount
        conn.execute("DELETE FROM migrations WHERE gallery_id = ?", (gallery_id,))
        return int(dropped)

    def migrated_count(self, gallery_id: int) -> int:
        (n,) = self._reader().execute(
            "SELECT count(*) FROM migrated_vectors WHERE gallery_id = ?", (gallery_id,)).fetchone()
        return int(n)

    def items_to_migrate(self, gallery_id: int, limit: int) -> list[tuple[int, str | None]]:
        """(id, kept image hash) of up to `limit` items with no vector from the new model yet, by id."""
        return [(int(r[0]), r[1]) for r in self._reader().execute(
            "SELECT i.id, i.image FROM items i LEFT JOIN migrated_vectors m ON m.item_id = i.id "
            "WHERE i.gallery_id = ? AND m.item_id IS NULL ORDER BY i.id LIMIT ?", (gallery_id, limit))]

    def insert_migrated(self, conn: sqlite3.Connection, gallery_id: int, ids: np.ndarray,
                        vectors: np.ndarray) -> int:
        """Store the new model's vectors of items that still exist; returns how many were stored."""
        alive = set()
        id_list = [int(i) for i in ids]
        for start in range(0, len(id_list), _CHUNK):
            part = id_list[start:start + _CHUNK]
            marks = ",".join("?" * len(part))
            alive.update(r[0] for r in conn.execute(
                f"SELECT id FROM items WHERE gallery_id = ? AND id IN ({marks})", (gallery_id, *part)))
        rows = [(i, gallery_id, vectors[j].tobytes()) for j, i in enumerate(id_list) if i in alive]
        conn.executemany("INSERT OR REPLACE INTO migrated_vectors (item_id, gallery_id, vector) VALUES (?, ?, ?)",
                         rows)
        return len(rows)

    def iter_migrated(self, gallery_id: int, dim: int, *, chunk: int = 50_000
                      ) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
        """As `iter_items`, with each item's vector from the new model (every item must have one)."""
        yield from self._iter_vector_rows(
            "SELECT i.id, i.label, m.vector FROM items i JOIN migrated_vectors m ON m.item_id = i.id "
            "WHERE i.gallery_id = ? ORDER BY i.id", (gallery_id,), dim, chunk)

    def sample_migrated(self, gallery_id: int, dim: int, n: int) -> np.ndarray:
        """About n of the new model's vectors of a gallery (evenly spread by id), for IVF training."""
        rows = self._reader().execute(
            "SELECT vector FROM migrated_vectors WHERE gallery_id = ? ORDER BY item_id", (gallery_id,)).fetchall()
        step = max(1, len(rows) // max(n, 1))
        rows = rows[::step][:n]
        return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(len(rows), dim)

    def finish_migration(self, conn: sqlite3.Connection, gallery_id: int, fingerprint: str, dim: int) -> None:
        """The switch: every item's vector becomes the new model's, the gallery is bound to the new
        model and its threshold overrides (the distance threshold and the cohort threshold, both of the old
        model's embeddings) are dropped. The caller checked
        that every item has a migrated vector."""
        conn.execute(
            "UPDATE items SET vector = (SELECT m.vector FROM migrated_vectors m WHERE m.item_id = items.id) "
            "WHERE gallery_id = ?", (gallery_id,))
        conn.execute("UPDATE galleries SET fingerprint = ?, dim = ?, threshold = NULL, cohort_threshold = NULL "
                     "WHERE id = ?",
                     (fingerprint, dim, gallery_id))
        conn.execute("DELETE FROM migrated_vectors WHERE gallery_id = ?", (gallery_id,))
        conn.execute("DELETE FROM migrations WHERE gallery_id = ?", (gallery_id,))

    def vectors_of_ids(self, conn: sqlite3.Connection | None, ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored vectors float32 (m, dim) of existing item ids, in the order given (conn None: this
        thread's reader)."""
        conn = conn if conn is not None else self._reader()
        blobs: dict[int, bytes] = {}
        id_list = [int(i) for i in ids]
        for start in range(0, len(id_list), _CHUNK):
            part = id_list[start:start + _CHUNK]
            marks = ",".join("?" * len(part))
            blobs.update(conn.execute(f"SELECT id, vector FROM items WHERE id IN ({marks})", part).fetchall())
        return np.frombuffer(b"".join(blobs[i] for i in id_list), dtype=np.float32).reshape(len(id_list), dim)

    def class_ids(self, conn: sqlite3.Connection, gallery_id: int, label: str) -> np.ndarray:
        rows = conn.execute(
            "SELECT id FROM items WHERE gallery_id = ? AND label = ? ORDER BY id", (gallery_id, label)
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    # ------------------------------------------------------------------ reads
    def item_details(self, gallery_id: int, ids: Sequence[int]) -> dict[int, tuple[str | None, dict[str, str]]]:
        """id -> (client id, metadata) for the given ids that exist."""
        conn = self._reader()
        out: dict[int, tuple[str | None, dict[str, str]]] = {}
        unique_ids = sorted({int(i) for i in ids})
        for start in range(0, len(unique_ids), _CHUNK):
            part = unique_ids[start:start + _CHUNK]
            marks = ",".join("?" * len(part))
            for item_id, cid, md in conn.execute(
                f"SELECT id, client_id, metadata FROM items WHERE gallery_id = ? AND id IN ({marks})",
                (gallery_id, *part),
            ):
                out[int(item_id)] = (cid, json.loads(md) if md else {})
        return out

    def vectors_of_labels(self, gallery_id: int, labels: Sequence[str], dim: int,
                          max_id: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(ids int64 (m,), labels, vectors float32 (m, dim)) of the items of `labels` with id <= max_id.

        `max_id` hides rows committed but not yet applied to the in-memory index, so that a query
        sees the same items through SQLite as through FAISS.
        """
        conn = self._reader()
        ids: list[int] = []
        out_labels: list[str] = []
        blobs: list[bytes] = []
        conn.execute("BEGIN")  # one read snapshot across the chunks
        try:
            for start in range(0, len(labels), _CHUNK):
                part = list(labels[start:start + _CHUNK])
                marks = ",".join("?" * len(part))
                for item_id, label, blob in conn.execute(
                    f"SELECT id, label, vector FROM items WHERE gallery_id = ? AND label IN ({marks}) "
                    "AND id <= ?",
                    (gallery_id, *part, max_id),
                ):
                    ids.append(item_id)
                    out_labels.append(label)
                    blobs.append(blob)
        finally:
            conn.execute("COMMIT")
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim)
        return np.array(ids, dtype=np.int64), out_labels, vectors

    def iter_items(self, gallery_id: int, dim: int, *, after_id: int = 0,
                   chunk: int = 50_000) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
        """Yield (ids int64, labels, vectors float32 (m, dim)) chunks of the items with id > after_id, by id.

        Runs in one read transaction, so the chunks are one consistent view of the file.
        """
        yield from self._iter_vector_rows(
            "SELECT id, label, vector FROM items WHERE gallery_id = ? AND id > ? ORDER BY id",
            (gallery_id, after_id), dim, chunk)

    def _iter_vector_rows(self, sql: str, params: tuple, dim: int, chunk: int
                          ) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
        """(ids, labels, vectors) chunks of the (id, label, vector blob) rows of `sql`, read in one
        read transaction."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            cur = conn.execute(sql, params)
            while True:
                rows = cur.fetchmany(chunk)
                if not rows:
                    break
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), dim)
                yield ids, [r[1] for r in rows], vectors
        finally:
            conn.execute("COMMIT")

    def count_items(self, gallery_id: int, max_id: int) -> int:
        """How many of the gallery's items have id <= max_id."""
        (n,) = self._reader().execute(
            "SELECT count(*) FROM items WHERE gallery_id = ? AND id <= ?", (gallery_id, max_id)
        ).fetchone()
        return int(n)

    def all_ids(self, gallery_id: int, max_id: int) -> np.ndarray:
        """Sorted int64 ids of the gallery's items with id <= max_id."""
        rows = self._reader().execute(
            "SELECT id FROM items WHERE gallery_id = ? AND id <= ? ORDER BY id", (gallery_id, max_id)
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def sample_vectors(self, gallery_id: int, dim: int, n: int, seed: int = 0) -> np.ndarray:
        """About n vectors of the gallery (all when it has fewer), for training IVF centroids."""
        conn = self._reader()
        (count,) = conn.execute("SELECT count(*) FROM items WHERE gallery_id = ?", (gallery_id,)).fetchone()
        if count <= n:
            rows = conn.execute("SELECT vector FROM items WHERE gallery_id = ?", (gallery_id,)).fetchall()
        else:
            # A deterministic stride over ids: cheap, and spread over the whole enrollment history.
            step = count / n
            ids = conn.execute(
                "SELECT id FROM items WHERE gallery_id = ? ORDER BY id", (gallery_id,)
            ).fetchall()
            rng = np.random.default_rng(seed)
            offset = rng.uniform(0, step)
            chosen = [ids[int(offset + i * step)][0] for i in range(n)]
            rows = []
            for start in range(0, len(chosen), _CHUNK):
                part = chosen[start:start + _CHUNK]
                marks = ",".join("?" * len(part))
                rows.extend(conn.execute(f"SELECT vector FROM items WHERE id IN ({marks})", part).fetchall())
        return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(len(rows), dim)
