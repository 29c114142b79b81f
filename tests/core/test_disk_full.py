"""A full disk during a write is RESOURCE_EXHAUSTED, stores nothing of the call and leaves earlier data
intact, whether SQLite reports it (SQLITE_FULL) or the system does (ENOSPC), during a statement or at
the commit."""

from __future__ import annotations

import errno
import sqlite3

import grpc
import numpy as np
import pytest

from twinsearch.client.errors import ResourceExhausted
from twinsearch.server.database import Database
from twinsearch.server.status import status_for
from twinsearch.server.store import GalleryStore, StoreSettings

from .conftest import DIM, unit


class _CommitFails:
    """The writer connection, except that its next COMMIT fails as a full disk makes it fail."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql, *args):
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def _full_insert(error: BaseException):
    real = Database.insert_items

    def insert_items(self, conn, *args, **kwargs):
        real(self, conn, *args, **kwargs)  # rows written in the transaction, then the disk fills up
        raise error

    return insert_items


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database or disk is full"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_is_resource_exhausted_and_stores_nothing(tmp_path, rng, monkeypatch, error):
    store = GalleryStore.open(tmp_path / "store", StoreSettings(synchronous="NORMAL"))
    store.create_gallery("g", fingerprint="m", dim=DIM)
    before = unit(rng.normal(size=(5, DIM)))
    kept = store.enroll("g", ["a"] * 5, before, client_ids=[f"a{i}" for i in range(5)])
    with monkeypatch.context() as patch:
        patch.setattr(Database, "insert_items", _full_insert(error))
        with pytest.raises(ResourceExhausted, match="disk of the data folder .* is full: nothing of this call") as info:
            store.enroll("g", ["b"] * 3, unit(rng.normal(size=(3, DIM))), client_ids=["b0", "b1", "b2"])
    code, details = status_for(info.value)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "free space" in details
    _assert_intact(store, before, kept)
    # Space again: the same batch goes in, and the store reopens with exactly what was acknowledged.
    store.enroll("g", ["b"] * 3, unit(rng.normal(size=(3, DIM))), client_ids=["b0", "b1", "b2"])
    store.close()
    with GalleryStore.open(tmp_path / "store", StoreSettings(synchronous="NORMAL")) as again:
        assert again.get_gallery("g").item_count == 8
        assert [c.label for c in again.list_classes("g").classes] == ["a", "b"]


def test_a_commit_that_finds_the_disk_full_rolls_back(tmp_path, rng):
    store = GalleryStore.open(tmp_path / "store", StoreSettings(synchronous="NORMAL"))
    store.create_gallery("g", fingerprint="m", dim=DIM)
    before = unit(rng.normal(size=(5, DIM)))
    kept = store.enroll("g", ["a"] * 5, before)
    writer = store.db._writer
    store.db._writer = _CommitFails(writer)
    try:
        with pytest.raises(ResourceExhausted):
            store.enroll("g", ["b"] * 3, unit(rng.normal(size=(3, DIM))))
        with pytest.raises(ResourceExhausted):
            store.delete_class("g", "a")
        with pytest.raises(ResourceExhausted):
            store.create_gallery("h", fingerprint="m", dim=DIM)
    finally:
        store.db._writer = writer
    assert not writer.in_transaction
    _assert_intact(store, before, kept)
    assert [g.name for g in store.list_galleries()] == ["g"]
    store.close()


def _assert_intact(store: GalleryStore, vectors: np.ndarray, kept) -> None:
    info = store.get_gallery("g")
    assert (info.item_count, info.class_count) == (5, 1)
    hits = store.search("g", vectors, k=1)
    assert [h[0].id for h in hits] == [e.id for e in kept] and all(h[0].distance == 0.0 for h in hits)
