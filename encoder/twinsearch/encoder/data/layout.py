"""Reading a folder tree's layout: does it look like its classes sit deeper than asked?

Omniglot keeps characters at `alphabet/character/`; read at class depth 1 it gives a handful of
alphabets as classes, which then cannot be split or make a poor training set. The command line uses
this to suggest `--class-depth` when a data error may come from the wrong depth.
"""

from __future__ import annotations

import os

from ..errors import DataError
from .sources import open_source


def deeper_class_depth(path: str | os.PathLike, class_depth: int, split: str | None = None) -> int | None:
    """`class_depth + 1` when every image of the tree at `path` also sits inside a folder one level
    deeper and that depth gives more classes; None otherwise (and for idx data, or unreadable paths)."""
    try:
        here = open_source(path, class_depth, split)
        if here.arrays is not None:  # idx files: no folders
            return None
        deeper = open_source(path, class_depth + 1, split)
    except DataError:
        return None
    return class_depth + 1 if deeper.num_classes > here.num_classes else None
