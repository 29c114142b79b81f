"""Listing the files of a folder tree, following symbolic links.

A training or evaluation set is often assembled from links (`union/Greek -> omniglot/Greek`), so links
to folders and to files are followed, and the paths returned keep the link names: a class is named
after the link, not after where it points. Each real folder is read once, found by its (device,
inode): a link back to an ancestor would otherwise loop for ever, and a second link to a folder
already read would put the same images under two class names. Such links, and broken ones, are
skipped with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)


def list_files(root: str | os.PathLike, skip: Callable[[str], bool] | None = None) -> list[PurePosixPath]:
    """The regular files under `root` (links followed), as paths relative to it, sorted.

    Folders and files whose name `skip` accepts are not read.
    """
    skip = skip or (lambda name: False)
    root = Path(root)
    top = root.stat()
    seen = {(top.st_dev, top.st_ino)}
    found: list[PurePosixPath] = []

    def cannot_list(error: OSError) -> None:
        log.warning("cannot list folder %s: %s", error.filename, error.strerror or error)

    for folder, dirs, files in os.walk(root, onerror=cannot_list, followlinks=True):
        here = PurePosixPath(*Path(folder).relative_to(root).parts)
        kept = []
        for name in sorted(dirs):
            if skip(name):
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
            if skip(name):
                continue
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                found.append(here / name)
            elif os.path.islink(path):
                log.warning("skipping broken link %s -> %s", path, os.readlink(path))
    return sorted(found)
