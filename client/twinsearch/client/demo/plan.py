"""The demo's data and plan: the held-out Omniglot alphabets, one enrolled drawer per character,
probes by other drawers, characters kept out of the gallery, and same / different pairs.

Layout of the zip: `images_background_small2/<alphabet>/<characterNN>/<id>_<drawer>.png`, 20 drawers
per character. Everything is drawn with one seeded `random.Random`, so a seed gives one plan.
"""

from __future__ import annotations

import random
import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

HELD_OUT = ("Japanese_(katakana)", "Sanskrit", "Tagalog")
ZIP_NAME = "images_background_small2.zip"
_FILE = re.compile(r"^(?P<root>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>character\d+)/(?P<name>\d+_(?P<drawer>\d+)\.png)$")


@dataclass(frozen=True)
class Sample:
    key: str        # alphabet/characterNN/file.png: the client id
    label: str      # alphabet/characterNN
    drawer: int
    data: bytes


@dataclass
class Plan:
    enrolled: list[Sample] = field(default_factory=list)       # one per enrolled character
    known_probes: list[Sample] = field(default_factory=list)   # other drawers of enrolled characters
    unknown_probes: list[Sample] = field(default_factory=list)  # characters never enrolled
    same_pairs: list[tuple[Sample, Sample]] = field(default_factory=list)
    different_pairs: list[tuple[Sample, Sample]] = field(default_factory=list)
    classes: int = 0
    unknown_classes: int = 0


def find_data(given: Path | None) -> Path:
    if given is not None:
        return given
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *Path.cwd().parents, *here.parents]:
        candidate = base / "data" / "omniglot" / ZIP_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"cannot find data/omniglot/{ZIP_NAME}; run from the repository or pass --data")


def load_characters(path: Path, alphabets: list[str]) -> dict[str, list[Sample]]:
    """Every image of the chosen alphabets, by character label, sorted by drawer."""
    wanted = set(alphabets)
    by_label: dict[str, list[Sample]] = defaultdict(list)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            m = _FILE.match(name)
            if not m or m["alphabet"] not in wanted:
                continue
            label = f"{m['alphabet']}/{m['character']}"
            by_label[label].append(Sample(f"{label}/{m['name']}", label, int(m["drawer"]), zf.read(name)))
    missing = wanted - {label.split("/")[0] for label in by_label}
    if missing:
        raise FileNotFoundError(f"alphabets {sorted(missing)} not found in {path}")
    return {label: sorted(samples, key=lambda s: s.drawer) for label, samples in sorted(by_label.items())}


def make_plan(characters: dict[str, list[Sample]], *, probes_per_class: int, unknown_fraction: float,
              pairs: int, seed: int) -> Plan:
    rng = random.Random(seed)
    labels = list(characters)
    unknown = set(rng.sample(labels, round(unknown_fraction * len(labels))))
    plan = Plan(classes=len(labels) - len(unknown), unknown_classes=len(unknown))
    for label in labels:
        samples = list(characters[label])
        rng.shuffle(samples)
        if label in unknown:
            plan.unknown_probes.extend(samples[:probes_per_class])
            continue
        plan.enrolled.append(samples[0])  # ONE drawer's image: one-shot
        plan.known_probes.extend(samples[1:1 + probes_per_class])
    for _ in range(pairs):
        a, b = rng.sample(characters[rng.choice(labels)], 2)
        plan.same_pairs.append((a, b))
        first, second = rng.sample(labels, 2)
        plan.different_pairs.append((rng.choice(characters[first]), rng.choice(characters[second])))
    return plan
