"""The models a server holds, by name: which one embeds a call, and which one a gallery is bound to.

    registry = load_models([("characters", Path("omniglot.tsm")), (None, Path("sig.tsm"))])
    registry.default.name            # "characters": the first is the default
    registry.get("signatures")       # by name (InvalidArgument for a name the server does not hold)
    registry.by_fingerprint(fp)      # the model a gallery is bound to, or None

A gallery stores the fingerprint of its model, never the name: names are chosen when the server
starts (`twinsearch serve --model NAME=PATH`), fingerprints belong to the weights and preprocessing.
A model given without a name is named by its card. Two models with one name, or one model twice
(the same fingerprint under two names, which would leave a gallery's model ambiguous), are refused.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinsearch.client.errors import InvalidArgument

from .thresholds import ThresholdPolicy

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MODEL_SUFFIX = ".tsm"


@dataclass
class ServedModel:
    """A loaded model under its name, with its threshold policy and what loading it cost."""

    name: str
    model: Any                  # an EncoderModel (or anything with its interface)
    policy: ThresholdPolicy
    load_seconds: float = 0.0   # reading and building it at start-up
    weight_bytes: int = 0       # its parameters and buffers in memory

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    @property
    def dim(self) -> int:
        return int(self.model.dim)


def served(name: str, model, default_threshold: str = "eer", load_seconds: float = 0.0) -> ServedModel:
    net = getattr(model, "net", None)
    weights = 0
    if net is not None:
        weights = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
    return ServedModel(name, model, ThresholdPolicy(model.calibration, default=default_threshold),
                       load_seconds, int(weights))


def check_names(models: Sequence[tuple[str, str]]) -> None:
    """ValueError unless each (name, fingerprint) has a valid name of its own and a fingerprint of its own."""
    names: set[str] = set()
    fingerprints: dict[str, str] = {}
    for name, fingerprint in models:
        if not NAME_PATTERN.match(name):
            raise ValueError(f"model name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if name in names:
            raise ValueError(f"two models are named {name!r}: give each its own name (--model NAME=PATH)")
        if fingerprint in fingerprints:
            raise ValueError(f"models {fingerprints[fingerprint]!r} and {name!r} are the same model "
                             f"(fingerprint {fingerprint}): serve it once")
        names.add(name)
        fingerprints[fingerprint] = name


class ModelRegistry:
    """The served models in order, the first the default. Thread-safe to read."""

    def __init__(self, models: Sequence[ServedModel]):
        if not models:
            raise ValueError("a server needs at least one model")
        check_names([(m.name, m.fingerprint) for m in models])
        self._models: dict[str, ServedModel] = {m.name: m for m in models}

    @property
    def default(self) -> ServedModel:
        return next(iter(self._models.values()))

    def names(self) -> list[str]:
        return list(self._models)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)

    def get(self, name: str | None) -> ServedModel:
        """The model named `name` (None or empty: the default); InvalidArgument for another name."""
        if not name:
            return self.default
        found = self._models.get(name)
        if found is None:
            raise InvalidArgument(f"this server holds no model named {name!r}; it holds {', '.join(self._models)}")
        return found

    def by_fingerprint(self, fingerprint: str) -> ServedModel | None:
        return next((m for m in self._models.values() if m.fingerprint == fingerprint), None)

    def replace_model(self, name: str, model) -> None:
        """Serve another object under `name` (same interface; tests wrap a model to watch its passes)."""
        self._models[name].model = model


def parse_model_option(text: str) -> tuple[str | None, str]:
    """`--model` value: "NAME=PATH" -> (NAME, PATH); "PATH" -> (None, PATH), named by its card.

    A value whose part before "=" is not a valid name is taken whole as a path."""
    name, sep, path = text.partition("=")
    if sep and NAME_PATTERN.match(name) and path:
        return name, path
    return None, text


def check_model_option(text: str, flag: str = "--model") -> None:
    """ValueError for a value with "=" that parse_model_option takes whole as a path when no file has that path:
    most likely NAME=PATH with a name that cannot be one, which loading would only tell as a missing file."""
    name, sep, path = text.partition("=")
    if not sep or Path(text).is_file():
        return
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{flag} {text}: {name!r} before '=' cannot name a model (use 1-64 letters, digits, '.', "
                         f"'_' or '-'), and no model file has the path {text!r}")
    if not path:
        raise ValueError(f"{flag} {text}: no path after '=' (--model NAME=PATH)")


def model_files(folder: Path) -> list[Path]:
    """The model files (*.tsm) directly in `folder`, by name; ValueError when it holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--models {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix == MODEL_SUFFIX and p.is_file())
    if not files:
        raise ValueError(f"--models {folder}: no model files (*{MODEL_SUFFIX}) in it")
    for f in files:  # each is served under its file's name
        if not NAME_PATTERN.match(f.stem):
            raise ValueError(f"--models {folder}: {f.name!r} cannot name a model (use 1-64 letters, digits, '.', "
                             "'_' or '-'): rename the file")
    return files


def warm_up(model) -> None:
    """Decode and embed a blank PNG image through `model`, once alone and once as a pair, before the server
    takes calls: the first image call otherwise pays for the image codec's set-up and the runtime's first
    passes at those batch sizes (a first Verify took 9 to 10.5 ms against about 3.3 for the next ones)."""
    import io

    from PIL import Image

    c, h, w = model.preprocess.shape
    buf = io.BytesIO()
    Image.new("RGB" if c == 3 else "L", (w, h), "white").save(buf, format="PNG")
    png = buf.getvalue()
    model.embed([png])
    model.embed([png, png])


def load_models(specs: Sequence[tuple[str | None, Path | str | None]], default_threshold: str = "eer") -> ModelRegistry:
    """Load each (name or None, path or shipped model name or None for the default model), in order.
    Names and fingerprints are checked on the cards first: two models that cannot be served together
    fail before either loads its weights."""
    from twinsearch.encoder.card import read_card
    from twinsearch.encoder.model import load_model, resolve_model_path

    specs = list(specs or [(None, None)])
    cards = [read_card(resolve_model_path(None if path is None else Path(path))) for _, path in specs]
    check_names([(name or card["name"], card["fingerprint"]) for (name, _), card in zip(specs, cards, strict=True)])
    loaded = []
    for name, path in specs:
        started = time.perf_counter()
        model = load_model(None if path is None else Path(path))
        loaded_s = time.perf_counter() - started
        warm_up(model)
        m = served(name or model.name, model, default_threshold, loaded_s)
        log.info("model %s (%s, %d-d) loaded in %.2f s (and warmed up in %.2f s), %.1f MiB of weights", m.name,
                 m.fingerprint, m.dim, m.load_seconds, time.perf_counter() - started - loaded_s,
                 m.weight_bytes / 2**20)
        loaded.append(m)
    return ModelRegistry(loaded)
