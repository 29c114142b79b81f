"""A consistent copy of a data folder, taken while a server may be serving it (`twinsearch backup`).

What a server acknowledged is in its SQLite file (`store.DB_NAME`): galleries, items, vectors, kept
images, migrations. The copy of that file is taken with SQLite's online backup in one step, so it is
one committed state of the database, whatever the server writes meanwhile (in WAL mode a reader does
not block the writer). The index snapshots (`snapshot.py`) are derived state: they are copied first,
each checked against its checksum, so that every snapshot in the copy is as old as the database copy
or older, which a server starting on the copy catches up from SQLite; one replaced while it was copied
is copied again, and left out only when that keeps happening (SNAPSHOT_TRIES): that gallery's index is
then rebuilt from SQLite at the first start (the server does the same for any snapshot it cannot use).

The copy is made in a hidden folder beside the destination and renamed to it once complete and synced:
an interrupted backup leaves no half copy under the destination's name. Restoring is serving the copy:
`twinsearch serve --data-dir DEST` with the models its galleries are bound to.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import images as kept
from . import snapshot
from .store import DB_NAME, SNAPSHOT_DIR

# A server replaces a gallery's snapshot at shutdown, when asked, and (if its settings say so) every so
# many changes, seconds apart at least, so a copy that raced one almost always succeeds at the next try;
# one left out is rebuilt at the copy's first start, which for IVF and HNSW galleries trains their index
# again.
SNAPSHOT_TRIES = 3


@dataclass(frozen=True)
class BackedUpGallery:
    name: str
    fingerprint: str   # of the model it is bound to: serve the copy with that model
    items: int


@dataclass(frozen=True)
class BackupReport:
    source: str
    destination: str
    galleries: list[BackedUpGallery] = field(default_factory=list)
    database_bytes: int = 0
    snapshots_copied: int = 0
    snapshots_left_out: list[str] = field(default_factory=list)  # galleries whose index is rebuilt at first start
    seconds: float = 0.0

    @property
    def items(self) -> int:
        return sum(g.items for g in self.galleries)


def backup(data_dir: Path | str, destination: Path | str) -> BackupReport:
    """Copy the data folder `data_dir` (served or not) to `destination`, which must not exist or be an
    empty folder. ValueError for a source that holds no gallery store or a destination in the way;
    sqlite3.DatabaseError for a database that cannot be read or whose copy fails its integrity check."""
    started = time.perf_counter()
    source, destination = Path(data_dir), Path(destination)
    database = source / DB_NAME
    if not database.is_file():
        raise ValueError(f"{source} holds no gallery store (no {DB_NAME}): give a server's --data-dir")
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise ValueError(f"{destination} exists and is not an empty folder: give a new one")
    root = source.resolve()
    if destination.resolve() == root or root in destination.resolve().parents:
        raise ValueError(f"{destination} is inside the data folder {source}: give a folder outside it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    work = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        copied, left_out = _copy_snapshots(source / SNAPSHOT_DIR, work / SNAPSHOT_DIR)
        if (source / kept.FOLDER).is_dir():  # a store from before schema version 3 that no server opened since
            shutil.copytree(source / kept.FOLDER, work / kept.FOLDER)
        galleries = _copy_database(database, work / DB_NAME)
        _sync_tree(work)
        if destination.exists():
            destination.rmdir()  # empty (checked above)
        os.replace(work, destination)
        snapshot.fsync_path(destination.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BackupReport(str(source), str(destination), galleries, (destination / DB_NAME).stat().st_size,
                        copied, left_out, round(time.perf_counter() - started, 3))


def _copy_snapshots(source: Path, target: Path) -> tuple[int, list[str]]:
    """Copy each gallery's snapshot whose copy checks out; (how many, the state files left out). A snapshot
    the server replaced while it was copied is copied again, up to SNAPSHOT_TRIES times in all."""
    copied, left_out = 0, []
    if not source.is_dir():
        return copied, left_out
    target.mkdir()
    for state in sorted(source.glob("g*.state.npz")):
        for _ in range(SNAPSHOT_TRIES):
            if _copy_snapshot(source, target, state):
                copied += 1
                break
            if not state.exists():  # the gallery was deleted meanwhile
                break
        else:
            left_out.append(state.name)
    return copied, left_out


def _copy_snapshot(source: Path, target: Path, state: Path) -> bool:
    """Copy one snapshot (its state file, then the index file that copy names) and check it; False, with
    nothing of it left in `target`, when the server replaced or removed it meanwhile."""
    try:
        gallery_id = int(state.name[1:].split(".", 1)[0])
        shutil.copy2(state, target / state.name)
        header, _ = snapshot.read_state(target / state.name, gallery_id)  # the state as copied
        index_name = str(header.get("index_file", ""))
        shutil.copy2(source / index_name, target / index_name)
        snapshot.read(target, gallery_id)  # the index it names, checked against its checksum once
        return True
    except (ValueError, OSError, snapshot.SnapshotError):  # replaced or removed meanwhile
        for stray in target.glob(f"{state.name.split('.', 1)[0]}[.-]*"):
            stray.unlink(missing_ok=True)
        return False


def _copy_database(database: Path, target: Path) -> list[BackedUpGallery]:
    """SQLite's online backup of `database` into `target` in one step (one committed state), checked."""
    src = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # all pages at once: one read transaction, never restarted by the server's writes
        check = _integrity(dst)
        if check != "ok":
            raise sqlite3.DatabaseError(f"the copy of {database} fails SQLite's integrity check: {check}")
        rows = dst.execute("SELECT g.name, g.fingerprint, (SELECT count(*) FROM items i WHERE i.gallery_id = g.id) "
                           "FROM galleries g ORDER BY g.name").fetchall()
    finally:
        src.close()
        dst.close()
    return [BackedUpGallery(name, fingerprint, int(n)) for name, fingerprint, n in rows]


def _integrity(conn: sqlite3.Connection) -> str:
    """SQLite's integrity check of a database: "ok", or its first finding."""
    (check,) = conn.execute("PRAGMA integrity_check").fetchone()
    return check


def _sync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, folders after their files."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            snapshot.fsync_path(Path(root) / name)
        snapshot.fsync_path(Path(root))
