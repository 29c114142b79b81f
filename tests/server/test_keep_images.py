"""Kept images: content-addressed rows of the SQLite file, deleted with the last item naming them,
none left by a failed write; a store that kept them as files (before schema version 3) has them moved
in when it opens; and a store written before schema version 2 opens unchanged."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import numpy as np
import pytest

from twinsearch.client import LocalClient
from twinsearch.client.errors import FailedPrecondition
from twinsearch.server import images as kept
from twinsearch.server.database import SCHEMA_VERSION
from twinsearch.server.engine import EnrollItem
from twinsearch.server.settings import EngineSettings

from .conftest import DIM, glyph, png

SETTINGS = EngineSettings(torch_threads=1, batch_wait_ms=0)


def kept_files(data) -> dict[str, bytes]:
    """What the store in `data` keeps: hash -> bytes, read by a connection of its own."""
    conn = sqlite3.connect(data / "gallery.sqlite3")
    try:
        return {key: bytes(blob) for key, blob in conn.execute("SELECT key, data FROM images")}
    finally:
        conn.close()


def test_images_are_kept_by_content_and_deleted_with_their_items(tmp_path, model_path):
    a, b = png(glyph(1)), png(glyph(2))
    raw = glyph(3)
    with LocalClient(tmp_path, model_path, settings=SETTINGS) as c:
        assert c.create_gallery("g").keep_images  # on by default
        c.enroll("g", ["x", "x", "y", "z"], [a, a, b, raw], ids=["a1", "a2", "b", "raw"])
        files = kept_files(tmp_path)
        # One file per distinct image, named by the SHA-256 of what was sent (pixel arrays as .npy).
        assert set(files) == {hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest(),
                              hashlib.sha256(kept.encode(raw)).hexdigest()}
        assert files[hashlib.sha256(a).hexdigest()] == a
        assert np.array_equal(kept.decode(files[hashlib.sha256(kept.encode(raw)).hexdigest()]), raw)
        c.delete("g", client_ids=["a1"])  # the other item still names the same image
        assert hashlib.sha256(a).hexdigest() in kept_files(tmp_path)
        c.delete("g", client_ids=["a2"])
        assert hashlib.sha256(a).hexdigest() not in kept_files(tmp_path)
        c.delete("g", label="y")
        assert len(kept_files(tmp_path)) == 1
        # A second gallery naming the same image keeps it when the first is deleted.
        c.create_gallery("h")
        c.enroll("h", "z", raw)
        c.delete_gallery("g")
        assert len(kept_files(tmp_path)) == 1
        c.delete_gallery("h")
        assert kept_files(tmp_path) == {}


def test_a_gallery_without_kept_images_keeps_nothing_and_cannot_migrate(tmp_path, model_path, other_model_path):
    with LocalClient(tmp_path, models={"a": model_path, "b": other_model_path}, settings=SETTINGS) as c:
        assert not c.create_gallery("g", keep_images=False).keep_images
        c.enroll("g", "x", png(glyph(1)))
        assert kept_files(tmp_path) == {}
        with pytest.raises(FailedPrecondition, match="does not keep its images"):
            c.migrate_gallery("g", "b")
        # Items enrolled as vectors have no image to embed again either.
        c.create_gallery("v")
        c.enroll("v", "x", np.ones(DIM, dtype=np.float32) / np.sqrt(DIM))
        with pytest.raises(FailedPrecondition, match="1 items without a kept image"):
            c.migrate_gallery("v", "b")


def test_a_store_that_kept_files_has_them_moved_into_the_database(tmp_path, model_path):
    """The layout before schema version 3: one file per image under images/ab/<sha256>."""
    a, b = png(glyph(4)), png(glyph(5))
    with LocalClient(tmp_path, model_path, settings=SETTINGS) as c:
        c.create_gallery("g")
        c.enroll("g", ["x", "y"], [a, b], ids=["a", "b"])
    key_a, key_b = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    conn = sqlite3.connect(tmp_path / "gallery.sqlite3")
    conn.execute("DELETE FROM images")  # as an older version wrote it: the images are files
    conn.commit()
    conn.close()
    folder = tmp_path / kept.FOLDER
    for key, data in ((key_a, a), (key_b, b)):
        (folder / key[:2]).mkdir(parents=True, exist_ok=True)
        (folder / key[:2] / key).write_bytes(data)
    # What a crash could leave: a complete file no item names, a partial write; and a damaged file.
    (folder / "ab").mkdir(exist_ok=True)
    (folder / "ab" / ("ab" + "0" * 62)).write_bytes(b"orphan")
    (folder / "ab" / ("ab" + "1" * 62 + ".partial")).write_bytes(b"half")
    with LocalClient(tmp_path, model_path, settings=SETTINGS) as c:
        assert kept_files(tmp_path) == {key_a: a, key_b: b}
        assert not folder.exists()
        assert c.engine.store.kept_image(key_a) == a
    # A damaged file (its bytes no longer hash to its name) is not taken for the image.
    conn = sqlite3.connect(tmp_path / "gallery.sqlite3")
    conn.execute("DELETE FROM images WHERE key = ?", (key_b,))
    conn.commit()
    conn.close()
    (folder / key_b[:2]).mkdir(parents=True)
    (folder / key_b[:2] / key_b).write_bytes(b[:-3])
    with LocalClient(tmp_path, model_path, settings=SETTINGS) as c:
        assert kept_files(tmp_path) == {key_a: a}
        assert c.get_gallery("g").item_count == 2


def test_a_failed_enrollment_leaves_no_image(tmp_path, model_path, monkeypatch):
    with LocalClient(tmp_path, model_path, settings=SETTINGS) as c:
        c.create_gallery("g")
        db = c.engine.store.db

        def full_disk(*args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(db, "insert_items", full_disk)
        with pytest.raises(Exception, match="full"):
            c.enroll("g", "x", png(glyph(5)))
        assert kept_files(tmp_path) == {}


# The schema of version 1, as the first release wrote it.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE galleries (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, fingerprint TEXT NOT NULL,
    dim INTEGER NOT NULL, index_spec TEXT NOT NULL, scoring TEXT NOT NULL, mean_k INTEGER NOT NULL, threshold REAL,
    deletions INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, gallery_id INTEGER NOT NULL, client_id TEXT,
    label TEXT NOT NULL, metadata TEXT, vector BLOB NOT NULL);
CREATE UNIQUE INDEX items_client ON items (gallery_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX items_label ON items (gallery_id, label);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_a_version_1_store_opens_unchanged_and_gains_the_new_columns(tmp_path, model_path):
    with LocalClient(tmp_path / "probe", model_path, settings=SETTINGS) as c:
        fingerprint = c.info().model.fingerprint
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    data = tmp_path / "old"
    data.mkdir()
    conn = sqlite3.connect(data / "gallery.sqlite3")
    conn.executescript(V1_SCHEMA)
    spec = {"kind": "exact", "nlist": 0, "nprobe": 0, "hnsw_m": 32, "ef_construction": 40, "ef_search": 64}
    conn.execute("INSERT INTO galleries (name, fingerprint, dim, index_spec, scoring, mean_k, threshold, created_at) "
                 "VALUES ('old', ?, ?, ?, 'nearest', 3, 0.7, ?)", (fingerprint, DIM, json.dumps(spec), time.time()))
    conn.executemany("INSERT INTO items (gallery_id, client_id, label, metadata, vector) VALUES (1, ?, ?, NULL, ?)",
                     [(f"c{i}", f"class-{i % 2}", vectors[i].tobytes()) for i in range(5)])
    conn.commit()
    conn.close()
    with LocalClient(data, model_path, settings=SETTINGS) as c:
        g = c.get_gallery("old")
        assert (g.item_count, g.class_count, g.threshold, g.keep_images, g.model) == (5, 2, 0.7, False, "tiny-0")
        hits = c.search("old", vectors[3], k=1)
        assert (hits[0].client_id, hits[0].distance) == ("c3", 0.0)
        assert c.engine.store.db.schema_version() == SCHEMA_VERSION == 5
        # Items from before version 5 have no image digest: any image under their client id is taken
        # as the one stored, as before.
        again = c.engine.enroll("old", [EnrollItem("class-1", png(glyph(3)), client_id="c3")])
        assert [(e.id, e.created) for e in again.stored] == [(4, False)]
        c.enroll("old", "class-9", png(glyph(9)))  # new items of an old gallery keep no image
        assert c.get_gallery("old").item_count == 6 and kept_files(data) == {}
        c.create_gallery("new")
        assert c.get_gallery("new").keep_images
        assert g.cohort_threshold is None  # version 4's column, empty for a gallery from before it
        c.update_gallery("old", cohort_threshold=0.5)
    with LocalClient(data, model_path, settings=SETTINGS) as c:  # and opens again at the current version
        assert c.get_gallery("old").item_count == 6
        assert (c.get_gallery("old").threshold, c.get_gallery("old").cohort_threshold) == (0.7, 0.5)
