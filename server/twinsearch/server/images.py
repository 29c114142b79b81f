"""Kept images: the source image of each enrolled item, stored content-addressed beside SQLite.

A gallery created with `keep_images` keeps every image it enrolls, so that it can later be embedded
again with another model (a migration). Each image is one file, `images/ab/<sha256>`, named by the
SHA-256 of its bytes: the same image enrolled twice is stored once, and an item's row names its
image by that hash (`items.image`).

Order of writes (what makes a crash harmless):
- enroll: the files are written (and, when the store syncs its commits, fsynced with their folders)
  before the transaction that inserts the items commits. A crash in between leaves files no item
  names.
- delete: the items' transaction commits first, then the files no remaining item names are removed.
  A crash in between leaves files no item names.
Files that no item names are removed by `clean` when the store opens, so a restart leaves no orphan.
The store calls every writing method under its writer mutex, so a file is never removed while an
enrollment that names it is being committed.

Payloads are kept as the caller sent them: encoded image bytes as they are, pixel arrays in numpy's
.npy format (`encode` / `decode`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FOLDER = "images"
_NPY_MAGIC = b"\x93NUMPY"
_PARTIAL = ".partial"


def encode(payload: bytes | np.ndarray) -> bytes:
    """The bytes kept for an image payload: encoded bytes as given, a pixel array as .npy."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(payload), allow_pickle=False)
    return buf.getvalue()


def decode(data: bytes) -> bytes | np.ndarray:
    """The payload `encode` kept: a pixel array for .npy bytes, else the encoded image bytes."""
    if data.startswith(_NPY_MAGIC):
        return np.load(io.BytesIO(data), allow_pickle=False)
    return data


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    """Content-addressed image files under `folder`. `durable`: fsync files and folders before a
    write returns (set when SQLite's commits are synchronous, so a kept image is as durable as the
    item that names it)."""

    def __init__(self, folder: Path, *, durable: bool = True):
        self.folder = Path(folder)
        self.durable = durable

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / key

    def put(self, blobs: Sequence[bytes]) -> list[str]:
        """Write each blob (unless a file of that content exists); returns their hashes, in order.

        On return every file is complete (and durable when `durable`). On failure the files written by
        this call are removed again and the error propagates.
        """
        keys = [digest(b) for b in blobs]
        written: list[Path] = []
        try:
            pending: list[tuple[int, Path]] = []
            folders: set[Path] = set()
            seen: set[str] = set()
            for key, blob in zip(keys, blobs, strict=True):
                target = self.path(key)
                if key in seen or target.exists():
                    continue
                seen.add(key)
                if not target.parent.is_dir():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    folders.add(target.parent.parent)
                partial = target.with_name(target.name + _PARTIAL)
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                written.append(partial)
                try:
                    os.write(fd, blob)
                except BaseException:
                    os.close(fd)
                    raise
                pending.append((fd, target))
                folders.add(target.parent)
            # fsync after all writes: the disk sees one batch of data, not a write-sync-write sequence.
            try:
                for fd, _ in pending:
                    if self.durable:
                        os.fdatasync(fd)
            finally:
                for fd, _ in pending:
                    os.close(fd)
            for _, target in pending:
                os.replace(target.with_name(target.name + _PARTIAL), target)
                written.append(target)
            if self.durable:
                for folder in sorted(folders):
                    _fsync_folder(folder)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        return keys

    def get(self, key: str) -> bytes:
        """The bytes of a kept image; FileNotFoundError when it is not kept."""
        return self.path(key).read_bytes()

    def remove(self, keys: Iterable[str]) -> int:
        """Remove the files of `keys` (the caller checked that no item names them); returns how many."""
        n = 0
        for key in set(keys):
            try:
                self.path(key).unlink()
            except FileNotFoundError:  # already gone: nothing to count
                continue
            n += 1
        return n

    def clean(self, referenced: set[str]) -> int:
        """Remove every file that no item names (left by a crash) and every partial write."""
        if not self.folder.is_dir():
            return 0
        removed = 0
        for sub in self.folder.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                if f.name.endswith(_PARTIAL) or f.name not in referenced:
                    f.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("removed %d kept images that no item names (left by an interrupted write or delete)", removed)
        return removed


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
