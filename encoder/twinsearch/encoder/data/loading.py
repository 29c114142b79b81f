"""Decode an ImageSource into memory with a Preprocess, whole or in the parts of a split by class or image."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..errors import DataError, ImageError
from ..preprocess import Preprocess
from .sources import ImageSource, remap_forges

log = logging.getLogger(__name__)


@dataclass
class ImageArrays:
    """Decoded images of one source. `images`: (N, C, H, W) float32 in [0, 1] (polarity applied, not
    normalised); `labels`: (N,) int64 class indices into `classes`; `groups[c]`: group of class c;
    `forges[c]`: the genuine class that forgery class c imitates, -1 for genuine classes (None: no
    forgeries)."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: tuple[str, ...]
    summary: dict
    forges: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset_classes(self, classes: np.ndarray) -> ImageArrays:
        """The images of the given class indices, relabelled 0..len(classes)-1 in that order."""
        classes = np.asarray(classes, dtype=np.int64)
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        mask = remap[self.labels] >= 0
        forges = remap_forges(self.forges, remap, classes)
        summary = {**self.summary, "classes": int(len(classes)), "images": int(mask.sum())}
        if forges is not None:
            summary.update(classes=int((forges < 0).sum()), forgery_classes=int((forges >= 0).sum()),
                           forgeries=int((forges >= 0)[remap[self.labels[mask]]].sum()))
        return ImageArrays(self.images[mask], remap[self.labels[mask]], tuple(self.classes[c] for c in classes),
                           tuple(self.groups[c] for c in classes), summary, forges)

    def subset_images(self, mask: np.ndarray) -> ImageArrays:
        """The images where `mask` (N,) bool is true; classes unchanged."""
        summary = {**self.summary, "images": int(mask.sum())}
        if self.forges is not None:
            summary["forgeries"] = int((self.forges[self.labels[mask]] >= 0).sum())
        return ImageArrays(self.images[mask], self.labels[mask], self.classes, self.groups, summary, self.forges)

    @property
    def genuine_classes(self) -> np.ndarray:
        """Indices of the classes that are not forgery classes (all of them without forgeries)."""
        if self.forges is None:
            return np.arange(self.num_classes)
        return np.flatnonzero(self.forges < 0)

    def forgery_of_images(self) -> np.ndarray:
        """(N,) int64: for each image, the genuine class it forges, or -1 for a genuine image."""
        if self.forges is None:
            return np.full(len(self.labels), -1, dtype=np.int64)
        return self.forges[self.labels]

    def split_genuine_classes(self, fraction: float, seed: int) -> tuple[ImageArrays, ImageArrays]:
        """(kept, held out) by genuine class, about `fraction` held out; forgery classes go with the class
        they imitate, so a writer's forgeries are never on the other side of the split from the writer."""
        genuine = self.genuine_classes
        keep, held = split_classes(len(genuine), fraction, seed)
        parts = []
        for side in (genuine[keep], genuine[held]):
            forgeries = [] if self.forges is None else np.flatnonzero(np.isin(self.forges, side))
            parts.append(self.subset_classes(np.concatenate([side, forgeries]).astype(np.int64)))
        return parts[0], parts[1]

    def group_labels(self) -> np.ndarray:
        """(num_classes,) int64 group index of each class (groups in order of first appearance)."""
        names = list(dict.fromkeys(self.groups))
        return np.array([names.index(g) for g in self.groups], dtype=np.int64)


def load_arrays(source: ImageSource, preprocess: Preprocess,
                progress: Callable[[int, int], None] | None = None,
                skipped: list[tuple[str, str]] | None = None) -> ImageArrays:
    """Decode every image of `source` with `preprocess.to_unit`. Unreadable images are an error, or left
    out and listed in `skipped` (see `decode_parts`)."""
    return decode_parts(source, preprocess, [item_indices(source)], progress, skipped)[0]


def item_indices(source: ImageSource) -> ImageArrays:
    """The source's labels, classes, groups and forgeries with each item's index, an (N,) int64 array, in
    place of its image. Split it (`split_genuine_classes`, `subset_images`, ...) to learn which items go
    where, then `decode_parts` decodes just those: no copy of the whole beside the parts."""
    return ImageArrays(np.arange(len(source), dtype=np.int64), source.labels.copy(), source.classes, source.groups,
                       source.summary(), None if source.forges is None else source.forges.copy())


def decode_parts(source: ImageSource, preprocess: Preprocess, parts: list[ImageArrays],
                 progress: Callable[[int, int], None] | None = None,
                 skipped: list[tuple[str, str]] | None = None) -> list[ImageArrays]:
    """`parts` of `item_indices(source)` with their items decoded by `preprocess.to_unit` in place of their
    indices: each image once, straight into the part that holds it; items of no part are not read.
    Unreadable images are an error, unless `skipped` is a list: then they are left out of their part and
    (path, reason) is appended to it for each."""
    indices = [np.asarray(part.images) for part in parts]
    owner = np.full(len(source), -1, dtype=np.int64)
    row = np.zeros(len(source), dtype=np.int64)
    for k, items in enumerate(indices):
        if items.ndim != 1 or (owner[items] >= 0).any() or len(np.unique(items)) != len(items):
            raise ValueError("decode_parts takes parts of item_indices(source), each item in one part at most")
        owner[items], row[items] = k, np.arange(len(items))
    out = [np.empty((len(items),) + preprocess.shape, dtype=np.float32) for items in indices]
    readable = [np.ones(len(items), dtype=bool) for items in indices]
    wanted = np.flatnonzero(owner >= 0)
    for done, (i, raw) in enumerate(source.iter_raw(wanted), 1):
        try:
            out[owner[i]][row[i]] = preprocess.to_unit(raw)
        except ImageError as exc:
            if skipped is None:
                raise DataError(f"{source.items[i]}: {exc}") from exc
            skipped.append((str(source.items[i]), str(exc)))
            readable[owner[i]][row[i]] = False
        if progress is not None:
            progress(done, len(wanted))
    log.info("decoded %d of %d images of %d classes from %s", len(wanted), len(source), source.num_classes,
             source.description)
    decoded = [replace(part, images=images) for part, images in zip(parts, out, strict=True)]
    return [part if ok.all() else part.subset_images(ok) for part, ok in zip(decoded, readable, strict=True)]


def split_classes(num_classes: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split class indices at random into (kept, held_out), held_out about `fraction` of them (>= 2 if > 0)."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"held-out fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_classes)
    n_out = 0 if fraction == 0 else max(2, round(fraction * num_classes))
    if num_classes - n_out < 2:
        raise DataError(f"cannot hold out {n_out} of {num_classes} classes and still train"
                        + (" (--val-fraction 0 holds none out)" if num_classes >= 2 else ""))
    return np.sort(order[n_out:]), np.sort(order[:n_out])


def capped_per_class(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """(N,) bool: which images to keep so that about `limit` remain, the same number from every class where
    the classes allow (each keeps min(its count, q) images, q the largest that fits the limit, at least 2),
    drawn at random by `seed`. All of them when they fit or `limit` is 0."""
    labels = np.asarray(labels, dtype=np.int64)
    if limit <= 0 or len(labels) <= limit:
        return np.ones(len(labels), dtype=bool)
    counts = np.bincount(labels)
    low, high = 0, int(counts.max())
    while low < high:  # the largest q with sum(min(count, q)) <= limit
        mid = (low + high + 1) // 2
        low, high = (mid, high) if np.minimum(counts, mid).sum() <= limit else (low, mid - 1)
    quota = max(low, 2)
    keys = np.random.default_rng([seed, 1]).random(len(labels))
    order = np.lexsort((keys, labels))  # by class, then at random within it
    first_of_class = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - first_of_class[labels[order]]
    return rank < quota
