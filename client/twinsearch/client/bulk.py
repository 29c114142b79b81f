"""Bulk indexing of a folder tree: one folder per class, streamed in batches, resumable.

Layout: `ROOT/<class>/<...>/<image>`; with `class_depth=N` the label is the first N folder names
joined by "/" (e.g. `class_depth=2` on `omniglot/Tagalog/character01/x.png` gives
"Tagalog/character01"). Files not inside a class folder are reported, never guessed at. Symbolic
links to folders and files are followed under their own names, so a tree assembled from links indexes
like a copy of it.

Several roots can go in one run: each file's path is then taken relative to the root's parent
(`photos/alice/1.png`, `scans/alice/1.png`), so that the same relative path under two roots names two
files, and the roots must have different names. Class labels come from below each root, so two roots
holding `alice/` fill one class "alice" (`twinsearch.client.layout` warns about that).

Every file's client id is its path relative to ROOT (POSIX separators, after an optional prefix; a
digest of it when that would be over 256 characters), so
enrolling the same tree again stores nothing twice: the server answers `created = False` for what it
already holds, counted here as "skipped". A run that failed half-way is resumed by running it again.

Files that cannot be read, or that the server cannot decode, are not fatal: the batch goes out with
`skip_invalid` and the report lists each failure with its reason. Every image file found is counted
once: `found == stored + skipped + failed`. The caller gets progress through a callback (the command
line draws a bar from it); this module only logs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twinsearch.client.errors import InvalidArgument
from twinsearch.client.types import EnrollItem

log = logging.getLogger(__name__)

MAX_CLIENT_ID_LENGTH = 256  # the server's limit on a client id, in characters
# Images per request. Fewer, larger requests cost the server less per image (fewer messages and
# commits): 20,000 Fashion-MNIST PNGs indexed at 944 to 1,042 images/s with 32 a request and 1,161 to
# 1,328 with 256, interleaved runs against one server on 2 cores.
DEFAULT_BATCH_SIZE = 256
# Bytes of image files per request: a request closes early when the next file would pass it, so that
# large images stay far below the server's message limit (64 MiB by default) with several in flight.
DEFAULT_BATCH_BYTES = 16 << 20
# Room a request needs beside one file's bytes: its label, client id and the message's framing.
_REQUEST_OVERHEAD = 64 << 10

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")


def file_limit(max_request_bytes: int | None) -> int | None:
    """The largest file one request of `max_request_bytes` can carry (None: no limit)."""
    return None if max_request_bytes is None else max(1, max_request_bytes - _REQUEST_OVERHEAD)


@dataclass(frozen=True)
class FolderEntry:
    """One image file of the tree: where it is, its relative path (the client id) and its class."""

    path: Path
    relative: str
    label: str


@dataclass(frozen=True)
class FileFailure:
    path: str     # relative to the root
    reason: str


@dataclass(frozen=True)
class BulkProgress:
    """Counts so far, passed to the progress callback after each acknowledged batch."""

    total: int     # files to send
    done: int      # files acknowledged or failed locally
    stored: int
    skipped: int
    failed: int


@dataclass(frozen=True)
class BulkReport:
    """What a bulk enrollment did. `found` counts the image files under the root (by extension, hidden
    ones left out), each counted once in `stored` (new), `skipped` (already stored under the same
    client id) or `failures` (outside a class folder, unreadable, or refused by the server):
    `found == stored + skipped + failed`. `sent` counts the files sent to the server."""

    gallery: str
    found: int
    sent: int
    stored: int
    skipped: int
    failures: tuple[FileFailure, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def images_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


_POSITION = re.compile(r"^items\[\d+\]: ")


def _without_position(reason: str) -> str:
    """A server's reason without its "items[N]: " prefix: N is the file's place in its batch, which
    means nothing to the reader; the report names the file."""
    return _POSITION.sub("", reason, count=1)


def client_id_for(relative: str, prefix: str = "") -> str:
    """The client id of a file: prefix + its relative path, or, when that is longer than the server
    accepts (MAX_CLIENT_ID_LENGTH), prefix + "sha256:" + a digest of the path (still stable across runs)."""
    client_id = prefix + relative
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        client_id = prefix + "sha256:" + hashlib.sha256(relative.encode()).hexdigest()
    return client_id


def walk_folder(
    root: str | Path,
    class_depth: int = 1,
    extensions: Sequence[str] | None = None,
) -> tuple[list[FolderEntry], list[FileFailure]]:
    """The image files under `root` in a stable order, and the files outside any class folder.

    Hidden files and folders (name starting with ".") are ignored, and so are files whose extension
    is not in `extensions` (case-insensitive; default IMAGE_EXTENSIONS). Symbolic links to folders and
    files are followed and keep their names (labels and relative paths name the link, not its target);
    see `_folders` for link cycles and broken links.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidArgument(f"not a folder: {str(root)!r}")
    if class_depth < 1:
        raise InvalidArgument(f"class_depth must be >= 1, got {class_depth}")
    wanted = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in (extensions or IMAGE_EXTENSIONS))
    entries: list[FolderEntry] = []
    outside: list[FileFailure] = []
    for folder, files in _folders(root):
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(wanted):
                continue
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            parts = relative.split("/")
            if len(parts) <= class_depth:
                outside.append(FileFailure(relative, f"not inside a class folder (class depth {class_depth})"))
                continue
            entries.append(FolderEntry(path, relative, "/".join(parts[:class_depth])))
    return entries, outside


def _folders(root: Path) -> Iterator[tuple[str, list[str]]]:
    """(folder, names of its files) for `root` and every folder under it, top-down in sorted order,
    following symbolic links; hidden folders are not entered.

    A tree assembled from links (`union/Greek -> omniglot/Greek`) indexes like a copy. Each real folder
    is read once, found by its (device, inode): a link back to an ancestor would otherwise loop for ever,
    and a second link to a folder already read would enroll the same images under two labels. Such
    links are skipped with a warning, and so are broken links to folders; a broken link with an image's
    name stays among the files, so that the run's report names it as a file it could not read.
    """
    top = root.stat()
    seen = {(top.st_dev, top.st_ino)}

    def cannot_list(error: OSError) -> None:
        log.warning("cannot list folder %s: %s", error.filename, error.strerror or error)

    for folder, dirs, files in os.walk(root, onerror=cannot_list, followlinks=True):
        kept = []
        for name in sorted(dirs):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError as exc:  # gone since it was listed
                log.warning("skipping folder %s: %s", path, exc.strerror or exc)
                continue
            if (st.st_dev, st.st_ino) in seen:
                log.warning("skipping %s: it leads to %s, which is read already (a link cycle, or a second "
                            "link to one folder)", path, os.path.realpath(path))
                continue
            seen.add((st.st_dev, st.st_ino))
            kept.append(name)
        dirs[:] = kept
        for name in files:
            path = os.path.join(folder, name)
            if not name.startswith(".") and os.path.islink(path) and not os.path.exists(path):
                log.warning("broken link %s -> %s", path, os.readlink(path))
        yield folder, files


def root_names(roots: Sequence[str | Path]) -> list[str]:
    """The names of the roots of one run; InvalidArgument for none, or for several sharing a name."""
    if not roots:
        raise InvalidArgument("no folder given")
    names = [Path(r).resolve().name for r in roots]
    if len(names) > 1 and len(set(names)) < len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise InvalidArgument(f"several folders named {', '.join(map(repr, repeated))}: their files would get the "
                              "same ids; index them one at a time, each with its own --id-prefix")
    return names


def walk_folders(
    roots: Sequence[str | Path],
    class_depth: int = 1,
    extensions: Sequence[str] | None = None,
) -> tuple[list[FolderEntry], list[FileFailure]]:
    """`walk_folder` over one or more roots; with several, relative paths start with the root's name."""
    roots = [Path(r) for r in roots]
    names = root_names(roots)
    if len(roots) == 1:
        return walk_folder(roots[0], class_depth, extensions)
    entries: list[FolderEntry] = []
    outside: list[FileFailure] = []
    for root, name in zip(roots, names, strict=True):
        found, stray = walk_folder(root, class_depth, extensions)
        entries += [FolderEntry(e.path, f"{name}/{e.relative}", e.label) for e in found]
        outside += [FileFailure(f"{name}/{f.path}", f.reason) for f in stray]
    return entries, outside


def enroll_folder(
    client,
    gallery: str,
    folder: str | Path | Sequence[str | Path],
    *,
    class_depth: int = 1,
    batch_size: int | None = None,
    max_batch_bytes: int | None = None,
    max_file_bytes: int | None = None,
    max_in_flight: int = 4,
    id_prefix: str = "",
    extensions: Sequence[str] | None = None,
    progress: Callable[[BulkProgress], None] | None = None,
) -> BulkReport:
    """Enroll every image under `folder` (or under each of several folders) into `gallery` through
    `client` (a Client or LocalClient).

    Files are read lazily, `batch_size` per request (None: DEFAULT_BATCH_SIZE; fewer when the files
    would pass `max_batch_bytes` together, None: DEFAULT_BATCH_BYTES; a larger file goes alone), with at
    most `max_in_flight` requests awaiting acknowledgement. A file over `max_file_bytes` (what one
    request may carry; None: no limit, else it bounds `max_batch_bytes` too) is reported as failed and
    the run goes on. `progress` is called with a BulkProgress before the first batch and after each
    acknowledged one. Raises only for what stops the whole run (unknown gallery, lost server after
    retries, ...); with client ids from relative paths, running it again resumes.
    """
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    max_batch_bytes = DEFAULT_BATCH_BYTES if max_batch_bytes is None else max_batch_bytes
    if batch_size < 1:
        raise InvalidArgument(f"batch_size must be >= 1, got {batch_size}")
    if max_batch_bytes < 1:
        raise InvalidArgument(f"max_batch_bytes must be >= 1, got {max_batch_bytes}")
    if max_file_bytes is not None:
        max_batch_bytes = min(max_batch_bytes, max_file_bytes)
    started = time.perf_counter()
    roots = [folder] if isinstance(folder, (str, os.PathLike)) else list(folder)
    entries, failures = walk_folders(roots, class_depth, extensions)
    total = len(entries)
    found = total + len(failures)
    log.info("enroll_folder %s -> %s: %d files, %d outside class folders", folder, gallery, total, len(failures))
    relative_of: dict[str, str] = {}  # client id -> relative path, to name the files the server refused

    def batches(counts: dict[str, int]) -> Iterator[list[EnrollItem]]:
        items: list[EnrollItem] = []
        size = 0
        for entry in entries:
            try:
                data = entry.path.read_bytes()
            except OSError as exc:
                failures.append(FileFailure(entry.relative, f"cannot read: {exc.strerror or exc}"))
                counts["local_failed"] += 1
                continue
            if not data:
                failures.append(FileFailure(entry.relative, "empty file"))
                counts["local_failed"] += 1
                continue
            if max_file_bytes is not None and len(data) > max_file_bytes:
                failures.append(FileFailure(
                    entry.relative, f"{len(data):,} bytes: more than one request may carry ({max_file_bytes:,})"))
                counts["local_failed"] += 1
                continue
            if items and (len(items) >= batch_size or size + len(data) > max_batch_bytes):
                yield items
                items, size = [], 0
            client_id = client_id_for(entry.relative, id_prefix)
            relative_of[client_id] = entry.relative
            items.append(EnrollItem(label=entry.label, payload=data, client_id=client_id))
            size += len(data)
        if items:
            yield items

    return send_batches(client, gallery, batches, total=total, found=found, failures=failures,
                        names=relative_of, max_in_flight=max_in_flight, progress=progress, started=started)


def send_batches(
    client,
    gallery: str,
    batches: Callable[[dict[str, int]], Iterator[list[EnrollItem]]],
    *,
    total: int,
    found: int,
    failures: list[FileFailure],
    names: Mapping[str, str],
    max_in_flight: int = 4,
    progress: Callable[[BulkProgress], None] | None = None,
    started: float | None = None,
) -> BulkReport:
    """Stream the batches of items `batches(counts)` yields into `gallery` and count what happens to
    each item: stored, skipped (its client id was stored already) or failed. Shared by folder indexing
    and vector loading (`twinsearch.client.vector_bulk`).

    `batches` receives the counts and adds to `counts["local_failed"]` each item it drops itself (after
    appending a FileFailure to `failures`). `total`: items expected (for the progress bar); `found`:
    what the report counts as found (`found == stored + skipped + failed` when `failures` already holds
    the items found but never offered). `names[client_id]` names an item in failures.
    """
    started = time.perf_counter() if started is None else started
    counts = {"sent": 0, "stored": 0, "skipped": 0, "local_failed": 0, "server_failed": 0}

    def counted() -> Iterator[list[EnrollItem]]:
        for items in batches(counts):
            counts["sent"] += len(items)
            yield items

    def report_progress() -> None:
        if progress is not None:
            done = counts["stored"] + counts["skipped"] + counts["server_failed"] + counts["local_failed"]
            progress(BulkProgress(total=total, done=done, stored=counts["stored"], skipped=counts["skipped"],
                                  failed=len(failures)))

    report_progress()
    for items, result in client._enroll_batches(gallery, counted(), max_in_flight=max_in_flight):
        # Each item of the batch is answered once: stored, skipped or failed (an item the answer does
        # not mention fails too, so that the counts always add up to the files found).
        waiting = {item.client_id for item in items}
        for item in result.stored:
            if item.client_id in waiting:
                waiting.discard(item.client_id)
                counts["stored" if item.created else "skipped"] += 1
        for failure in result.failed:
            client_id = items[failure.index].client_id if failure.index < len(items) else failure.client_id
            if client_id in waiting:
                waiting.discard(client_id)
                failures.append(FileFailure(names.get(client_id, client_id), _without_position(failure.reason)))
                counts["server_failed"] += 1
        for item in items:
            if item.client_id in waiting:
                failures.append(FileFailure(names.get(item.client_id, item.client_id),
                                            "the server's answer did not mention it"))
                counts["server_failed"] += 1
        report_progress()
    seconds = time.perf_counter() - started
    report = BulkReport(gallery=gallery, found=found, sent=counts["sent"], stored=counts["stored"],
                        skipped=counts["skipped"], failures=tuple(failures), seconds=seconds)
    log.info("bulk enrollment into %s: sent %d, stored %d, skipped %d, failed %d in %.1f s (%.0f items/s)",
             gallery, report.sent, report.stored, report.skipped, report.failed, seconds, report.images_per_s)
    return report
