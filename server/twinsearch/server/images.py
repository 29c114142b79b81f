"""Kept images: the source image of each enrolled item, kept so that a gallery can later be embedded
again with another model (a migration).

A gallery created with `keep_images` keeps every image it enrolls. The images are rows of the
database's `images` table, named by the SHA-256 of their bytes (the same image enrolled twice is kept
once; an item names its image by that hash, `items.image`), written and deleted in the transactions
that insert and delete the items naming them (`Database.put_images`, `Database.drop_unnamed_images`).

Payloads are kept as the caller sent them: encoded image bytes as they are, pixel arrays in numpy's
.npy format (`encode` / `decode`).

Stores written before schema version 3 kept one file per image under `images/ab/<sha256>`;
`import_folder` moves those files into the database when such a store opens.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .database import Database

log = logging.getLogger(__name__)

FOLDER = "images"  # where stores before schema version 3 kept their images
_NPY_MAGIC = b"\x93NUMPY"
_IMPORT_BYTES = 64 << 20  # bytes of images per transaction while importing a folder


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


def payload_digest(payload: bytes | np.ndarray) -> bytes | None:
    """What tells two images apart under one client id: the first 16 bytes of the SHA-256 of the bytes
    `encode` keeps for the payload (128 bits: two different images share it by chance with odds of about
    2^-128). None for a vector: the same image embedded again on another machine or device may differ in
    its last bits, and that is not another image."""
    if isinstance(payload, np.ndarray) and payload.ndim == 1:
        return None
    return hashlib.sha256(encode(payload)).digest()[:16]


def import_folder(folder: Path, db: Database) -> int:
    """Move the kept-image files under `folder` (the layout before schema version 3) into `db`, then
    remove the folder; returns how many images were moved.

    Only files that an item names and whose bytes still hash to their name are moved: files no item
    names (left by an interrupted write or delete) and partial writes are dropped with the folder.
    Every image is committed before anything is removed, so an interrupted import repeats at the next
    open and loses nothing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    named = db.referenced_images()
    moved, batch, size = 0, [], 0

    def flush() -> None:
        nonlocal moved, batch, size
        if batch:
            with db.transaction() as conn:
                db.put_images(conn, batch)
            moved += len(batch)
        batch, size = [], 0

    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name not in named:
            continue
        data = path.read_bytes()
        if digest(data) != path.name:
            log.warning("kept image %s is damaged (its bytes do not hash to its name): not imported", path)
            continue
        batch.append(data)
        size += len(data)
        if size >= _IMPORT_BYTES:
            flush()
    flush()
    shutil.rmtree(folder)
    log.info("moved %d kept images from %s into the database", moved, folder)
    return moved
