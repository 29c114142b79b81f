"""Atomic snapshots of a gallery's derived state: the FAISS index plus its class and item arrays.

Two files per gallery under `<data_dir>/snapshots/`:

- `g<id>-<token>.faiss`: the index, as `faiss.write_index` writes it (from a CPU copy);
- `g<id>.state.npz`: the class table's arrays and a JSON header that names the index file, its
  SHA-256, and the SQLite position it reflects (largest item id, deletions counter).

Each is written to a temporary name, fsynced and renamed; the state file is renamed last and is the
commit point, so a crash leaves either the old snapshot or the new one. A snapshot that is missing,
fails its checksum, or does not match the gallery is reported as `SnapshotError`; the caller then
rebuilds from SQLite.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1


class SnapshotError(Exception):
    """The snapshot cannot be used (missing, corrupt or stale); rebuild from SQLite."""


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: the names in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def state_path(folder: Path, gallery_id: int) -> Path:
    return folder / f"g{gallery_id}.state.npz"


def write(folder: Path, gallery_id: int, write_index, arrays: dict[str, np.ndarray], header: dict) -> Path:
    """Write a snapshot; `write_index(path: str)` writes the FAISS index file. Returns the state path."""
    folder.mkdir(parents=True, exist_ok=True)
    index_name = f"g{gallery_id}-{uuid.uuid4().hex[:12]}.faiss"
    index_path = folder / index_name
    tmp_index = folder / (index_name + ".tmp")
    write_index(str(tmp_index))
    _fsync_file(tmp_index)
    os.replace(tmp_index, index_path)
    header = dict(header, format=FORMAT, gallery_id=gallery_id, index_file=index_name,
                  index_sha256=_sha256(index_path))
    final = state_path(folder, gallery_id)
    tmp_state = folder / (final.name + ".tmp")
    with open(tmp_state, "wb") as f:
        np.savez(f, header=np.array(json.dumps(header)), **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_state, final)
    fsync_path(folder)
    # Older index files of this gallery are garbage now that the new state names another one.
    for old in folder.glob(f"g{gallery_id}-*.faiss*"):
        if old.name != index_name:
            old.unlink(missing_ok=True)
    return final


def read(folder: Path, gallery_id: int) -> tuple[dict, dict[str, np.ndarray], Path]:
    """(header, arrays, index path) of a gallery's snapshot, checksum verified; SnapshotError if unusable."""
    header, arrays = read_state(state_path(folder, gallery_id), gallery_id)
    index_path = folder / str(header.get("index_file", ""))
    if not index_path.is_file():
        raise SnapshotError(f"snapshot index {index_path} is missing")
    if _sha256(index_path) != header.get("index_sha256"):
        raise SnapshotError(f"snapshot index {index_path} fails its checksum")
    return header, arrays, index_path


def read_state(path: Path, gallery_id: int) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of the state file `path` of a gallery's snapshot, its index not checked; SnapshotError
    if it is missing, unreadable, or of another format or gallery."""
    if not path.exists():
        raise SnapshotError(f"no snapshot at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {k: data[k] for k in data.files if k != "header"}
    except Exception as exc:  # a truncated or garbled file raises many kinds of error
        raise SnapshotError(f"unreadable snapshot state {path}: {exc}") from exc
    if header.get("format") != FORMAT or header.get("gallery_id") != gallery_id:
        raise SnapshotError(f"snapshot {path} is of another format or gallery")
    return header, arrays


def remove(folder: Path, gallery_id: int) -> None:
    state_path(folder, gallery_id).unlink(missing_ok=True)
    for old in folder.glob(f"g{gallery_id}-*.faiss*"):
        old.unlink(missing_ok=True)
    for tmp in folder.glob(f"g{gallery_id}.state.npz.tmp"):
        tmp.unlink(missing_ok=True)
