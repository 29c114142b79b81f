"""What folder trees hold before they are indexed: classes and their image counts, a class depth that
looks wrong, and class names that several source folders share.

Bulk indexing trusts the layout it is given: at the wrong `class_depth` the Omniglot root becomes a
handful of classes (its alphabets), and two folders with the same class names are merged into one
class each. `survey` reads the trees (file names only, nothing is opened) so that the command line can
show what it is about to send and warn before it sends it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from twinsearch.client.bulk import root_names, walk_folder

# A depth looks too shallow when every image also sits in a folder one level deeper, that level gives
# at least DEEPER_FACTOR times the classes, and the classes at this depth hold MANY_PER_CLASS images
# or more on average (a person/session layout has few images per person: it is not flagged).
DEEPER_FACTOR = 2
MANY_PER_CLASS = 100


@dataclass(frozen=True)
class Survey:
    """The classes of one or more folder trees read at `class_depth`.

    `counts`: class label -> images, in label order, all sources together; `sources`: class label ->
    the source folders holding it; `outside`: images not inside a class folder; `deeper_classes`: how
    many classes the next depth would give (None unless every image sits that deep).
    """

    class_depth: int
    counts: dict[str, int]
    sources: dict[str, tuple[str, ...]]
    outside: int = 0
    deeper_classes: int | None = None

    @property
    def images(self) -> int:
        """Images inside class folders (what will be sent)."""
        return sum(self.counts.values())

    @property
    def shared(self) -> dict[str, tuple[str, ...]]:
        """Class labels found in more than one source folder, with those folders."""
        return {label: where for label, where in self.sources.items() if len(where) > 1}

    @property
    def suggested_depth(self) -> int | None:
        """`class_depth + 1` when this depth looks too shallow (see DEEPER_FACTOR), else None."""
        n = len(self.counts)
        if not n or self.deeper_classes is None or self.deeper_classes < DEEPER_FACTOR * n:
            return None
        return self.class_depth + 1 if self.images / n >= MANY_PER_CLASS else None

    def summary(self, shown: int = 10) -> str:
        """One line: the total and the first `shown` classes with their image counts."""
        listing = ", ".join(f"{label} {count}" for label, count in list(self.counts.items())[:shown])
        more = f", ... and {len(self.counts) - shown} more" if len(self.counts) > shown else ""
        outside = f"; {self.outside} outside any class folder" if self.outside else ""
        return (f"found {self.images} images in {len(self.counts)} classes (class depth {self.class_depth})"
                f"{': ' + listing if listing else ''}{more}{outside}")

    def warnings(self, shown: int = 3) -> list[str]:
        """What looks wrong, one line each, saying what to do."""
        out = []
        depth = self.suggested_depth
        if depth is not None:
            n = len(self.counts)
            out.append(f"every image sits at least one folder below its class folder, and --class-depth {depth} "
                       f"gives {self.deeper_classes} classes instead of {n} ({self.images // n} images per class "
                       f"here): if the folders at depth {depth} are the classes, use --class-depth {depth}")
        shared = self.shared
        if shared:
            examples = "; ".join(f"{label} in {', '.join(where)}" for label, where in list(shared.items())[:shown])
            more = f"; and {len(shared) - shown} more" if len(shared) > shown else ""
            out.append(f"{len(shared)} class names appear in more than one folder ({examples}{more}): their images "
                       "are enrolled into one class each; if they are different classes, index the folders into "
                       "separate galleries or rename the class folders")
        return out


def survey(folders: Sequence[str | Path], class_depth: int = 1, extensions: Sequence[str] | None = None) -> Survey:
    """Read the trees under `folders` as `enroll_folder` will (raises InvalidArgument as it does)."""
    root_names(folders)
    counts: Counter[str] = Counter()
    sources: dict[str, list[str]] = {}
    deeper: set[str] = set()
    nested = True
    outside = 0
    for folder in folders:
        entries, stray = walk_folder(folder, class_depth, extensions)
        outside += len(stray)
        for entry in entries:
            counts[entry.label] += 1
            where = sources.setdefault(entry.label, [])
            if str(folder) not in where:
                where.append(str(folder))
            parts = entry.relative.split("/")
            if len(parts) > class_depth + 1:
                deeper.add(f"{folder}\0{'/'.join(parts[:class_depth + 1])}")
            else:
                nested = False
    labels = sorted(counts)
    return Survey(class_depth=class_depth, counts={label: counts[label] for label in labels},
                  sources={label: tuple(sources[label]) for label in labels}, outside=outside,
                  deeper_classes=len(deeper) if nested and counts else None)
