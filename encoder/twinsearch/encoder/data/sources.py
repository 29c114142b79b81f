"""Labelled image sources: a folder tree, a zip archive of one, or a pair of idx files.

A folder tree has one folder per class (`root/<class>/<image>`), or with `class_depth=2` classes one
level deeper (`root/<group>/<class>/<image>`, Omniglot's alphabet/character). Leading folders shared by
every image (a zip's top folder, e.g. `images_background_small1/`) are skipped when the images sit
deeper than `class_depth`. Class names are the relative class paths ("Greek/character01"); the group
is the first component when `class_depth >= 2`, otherwise the class itself. Symbolic links to folders
and files are followed and keep their names (see `walk.list_files`), so a tree assembled from links
reads like a copy.

Skilled forgeries (signatures): with `forgery_suffix` (e.g. "_forg"), a class folder named
`<class><suffix>` holds forgeries of `<class>`, which must be present too. Such a folder is not a class of
its own to be recognised: `forges[c]` is the index of the genuine class that class `c` imitates (-1 for
genuine classes), and training and evaluation use its images only as negatives of that class.

An idx folder (MNIST / Fashion-MNIST layout, e.g. Debian's `/usr/share/datasets/fashion-mnist/`)
holds `<split>-images-idx3-ubyte[.gz]` and `<split>-labels-idx1-ubyte[.gz]`; `split` is "train" or
"test" (files named `t10k-*`).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..errors import DataError
from .walk import list_files

_SKIP_PARTS = ("__MACOSX",)


def _image_extensions() -> frozenset[str]:
    return frozenset(ext.lower() for ext in Image.registered_extensions())


@dataclass(frozen=True)
class ImageSource:
    """A labelled set of images, read lazily.

    `items[i]` is the image's location (file path, or member name in `archive`); `labels[i]` an index
    into `classes`; `groups[c]` the group of class `c`. `arrays`, when not None, holds the images
    themselves (idx data: (N, H, W) uint8).
    """

    description: str
    items: tuple[str, ...]
    labels: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    groups: tuple[str, ...]
    archive: str | None = None
    arrays: np.ndarray | None = None
    forges: np.ndarray | None = None  # (num_classes,) int64: genuine class a forgery class imitates, or -1

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def read(self, i: int) -> bytes | np.ndarray:
        """Bytes of image `i` (file or zip member), or its array for idx data."""
        if self.arrays is not None:
            return self.arrays[i]
        if self.archive is not None:
            with zipfile.ZipFile(self.archive) as zf:
                return zf.read(self.items[i])
        return Path(self.items[i]).read_bytes()

    def iter_raw(self, indices=None):
        """Yield (index, bytes-or-array) for every image, or for those at `indices` in that order, opening a
        zip once."""
        order = range(len(self)) if indices is None else (int(i) for i in indices)
        if self.arrays is not None:
            for i in order:
                yield i, self.arrays[i]
        elif self.archive is not None:
            with zipfile.ZipFile(self.archive) as zf:
                for i in order:
                    yield i, zf.read(self.items[i])
        else:
            for i in order:
                yield i, Path(self.items[i]).read_bytes()

    def summary(self) -> dict:
        """JSON-able description: where from, how many classes, groups and images (and forgeries)."""
        out = {
            "source": self.description,
            "classes": self.num_classes,
            "groups": sorted(set(self.groups)),
            "images": len(self),
        }
        if self.forges is not None:
            forged = self.forges >= 0
            out.update(classes=int((~forged).sum()), forgery_classes=int(forged.sum()),
                       forgeries=int(forged[self.labels].sum()))
        return out

    def with_forgeries(self, suffix: str) -> ImageSource:
        """The same images, with classes named `<class><suffix>` marked as forgeries of `<class>`.

        Raises DataError when a forgery class has no genuine class beside it. No such class: unchanged."""
        if not suffix:
            raise DataError("the forgery suffix must not be empty")
        index = {c: i for i, c in enumerate(self.classes)}
        forges = np.full(self.num_classes, -1, dtype=np.int64)
        for i, name in enumerate(self.classes):
            if name.endswith(suffix):
                genuine = name[: -len(suffix)]
                if genuine not in index:
                    raise DataError(f"{name!r} in {self.description} holds forgeries of {genuine!r}, "
                                    f"which has no folder of genuine images")
                forges[i] = index[genuine]
        if not (forges >= 0).any():
            return self
        return dataclasses.replace(self, forges=forges)

    def subset_classes(self, keep: Sequence[int], description: str | None = None) -> ImageSource:
        """The images of the classes with indices in `keep`, relabelled 0..len(keep)-1 in that order."""
        keep = list(keep)
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        mask = remap[self.labels] >= 0
        idx = np.flatnonzero(mask)
        return ImageSource(
            description=description or self.description,
            items=tuple(self.items[i] for i in idx) if self.arrays is None else self.items,
            labels=remap[self.labels[idx]],
            classes=tuple(self.classes[c] for c in keep),
            groups=tuple(self.groups[c] for c in keep),
            archive=self.archive,
            arrays=None if self.arrays is None else self.arrays[idx],
            forges=remap_forges(self.forges, remap, keep),
        )

    def select_groups(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> ImageSource:
        """Keep the classes whose group is in `include` (all when empty) and not in `exclude`."""
        known = set(self.groups)
        for name in list(include) + list(exclude):
            if name not in known:
                raise DataError(f"no group named {name!r} in {self.description}; groups: {sorted(known)}")
        keep = [c for c, g in enumerate(self.groups)
                if (not include or g in include) and g not in exclude]
        if not keep:
            raise DataError(f"no classes left in {self.description} after selecting groups")
        parts = []
        if include:
            parts.append("groups " + ",".join(include))
        if exclude:
            parts.append("without " + ",".join(exclude))
        return self.subset_classes(keep, f"{self.description} ({'; '.join(parts)})" if parts else None)


def remap_forges(forges: np.ndarray | None, remap: np.ndarray, keep: Sequence[int]) -> np.ndarray | None:
    """`forges` of the classes `keep` (in that order) after relabelling by `remap` (old -> new or -1).
    A forgery class kept without its genuine class is an error: it would become a class of its own."""
    if forges is None:
        return None
    old = forges[np.asarray(keep, dtype=np.int64)]
    new = np.where(old >= 0, remap[np.maximum(old, 0)], -1)
    if ((old >= 0) & (new < 0)).any():
        raise DataError("a forgery class was kept without the genuine class it imitates")
    return new if (new >= 0).any() else None


def open_source(path: str | os.PathLike, class_depth: int = 1, split: str | None = None,
                forgery_suffix: str | None = None) -> ImageSource:
    """Open a folder tree, a zip of one, or an idx folder (when it holds idx files for `split`).
    `forgery_suffix`: mark `<class><suffix>` folders as skilled forgeries of `<class>` (see the module)."""
    source = _open_source(path, class_depth, split)
    return source.with_forgeries(forgery_suffix) if forgery_suffix else source


def _open_source(path: str | os.PathLike, class_depth: int, split: str | None) -> ImageSource:
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path {str(p)!r} does not exist")
    if class_depth < 1:
        raise DataError(f"class depth must be >= 1, got {class_depth}")
    if p.is_dir() and _find_idx(p, split or "train") is not None:
        return read_idx(p, split or "train")
    if split is not None:
        raise DataError(f"--split is for idx folders; {str(p)!r} holds no idx files for split {split!r}")
    if p.is_file() and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
        return _from_paths(names, class_depth, str(p), archive=str(p))
    if p.is_dir():
        names = [str(f) for f in list_files(p, skip=_skipped_name)]
        src = _from_paths(names, class_depth, str(p), archive=None)
        items = tuple(str(p / n) for n in src.items)
        return ImageSource(src.description, items, src.labels, src.classes, src.groups)
    raise DataError(f"{str(p)!r} is neither a folder nor a zip archive")


def _skipped_name(name: str) -> bool:
    """Hidden files and folders, and the resource forks a macOS zip carries, are not images of a class."""
    return name.startswith(".") or name in _SKIP_PARTS


def _from_paths(names: list[str], class_depth: int, description: str, archive: str | None) -> ImageSource:
    exts = _image_extensions()
    paths = []
    for n in sorted(names):
        pp = PurePosixPath(n)
        if any(_skipped_name(part) for part in pp.parts):
            continue
        if pp.suffix.lower() in exts:
            paths.append(pp)
    if not paths:
        raise DataError(f"no images found in {description}")
    # Skip leading folders shared by all images while the images still sit deeper than class_depth.
    strip = 0
    while all(len(pp.parts) - 1 > class_depth + strip for pp in paths):
        first = {pp.parts[strip] for pp in paths}
        if len(first) != 1:
            break
        strip += 1
    class_of: dict[str, int] = {}
    labels, items = [], []
    for pp in paths:
        dirs = pp.parts[strip:-1]
        if len(dirs) < class_depth:
            raise DataError(f"{pp} in {description} is not inside a class folder at depth {class_depth}")
        cls = "/".join(dirs[:class_depth])
        labels.append(class_of.setdefault(cls, len(class_of)))
        items.append(str(pp))
    classes = tuple(class_of)
    groups = tuple(c.split("/")[0] if class_depth >= 2 else c for c in classes)
    return ImageSource(description, tuple(items), np.asarray(labels, dtype=np.int64), classes, groups, archive)


# ---------------------------------------------------------------------- idx files
def _find_idx(folder: Path, split: str) -> tuple[Path, Path] | None:
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    for suffix in ("", ".gz"):
        images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
        labels = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
        if images.exists() and labels.exists():
            return images, labels
    return None


def _read_idx_file(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise DataError(f"{path} is too short to be an idx file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path}: expected {int(np.prod(dims))} values, found {arr.size}")
    return arr.reshape(dims)


def read_idx(folder: str | os.PathLike, split: str = "train") -> ImageSource:
    """An idx folder's split as an ImageSource with arrays (N, H, W) uint8; classes "0".."9"."""
    folder = Path(folder)
    found = _find_idx(folder, split)
    if found is None:
        raise DataError(f"no idx files for split {split!r} in {folder}")
    images, labels = (_read_idx_file(p) for p in found)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"idx files in {folder} do not match: images {images.shape}, labels {labels.shape}")
    values = np.unique(labels)
    remap = {int(v): i for i, v in enumerate(values)}
    lab = np.array([remap[int(v)] for v in labels], dtype=np.int64)
    classes = tuple(str(int(v)) for v in values)
    return ImageSource(f"{folder} [{split}]", tuple(f"{split}:{i}" for i in range(len(lab))), lab, classes,
                       classes, archive=None, arrays=np.ascontiguousarray(images))
