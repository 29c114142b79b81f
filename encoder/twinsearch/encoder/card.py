"""The model card and the model file's container format, readable with the standard library alone.

A model file is a zip archive holding `card.json` (this card), `weights.pt` (a torch state dict) and,
optionally, `graph.onnx` (the same network as an ONNX graph, for fast CPU inference: runtime.py).
`read_card(path)` returns the card as a dict without importing torch or numpy, so tools (and the
server's `info`) can show a model without loading it.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ModelFileError

FORMAT = "twinsearch-model"
FORMAT_VERSION = 1
CARD_NAME = "card.json"
WEIGHTS_NAME = "weights.pt"
GRAPH_NAME = "graph.onnx"  # optional: the network as an ONNX graph (see runtime.py)


@dataclass
class ModelCard:
    """Everything known about a model besides its weights. `to_dict()` is JSON-able.

    `architecture`: {"backbone", "backbone_args", "dim", "head_args"}; `preprocess`: Preprocess.to_dict();
    `metric`: "euclidean" (L2-normalised embeddings, distances in [0, 2], smaller = more alike);
    `calibration`: Calibration.to_dict() or None; `training`: the command, loss, schedule and what
    happened; `data`: summaries of the training, validation and calibration sets; `evaluation`: results
    measured at the end of training; `fingerprint`: hex hash of the weights, architecture and preprocessing.
    """

    name: str
    architecture: dict[str, Any]
    preprocess: dict[str, Any]
    dim: int
    metric: str = "euclidean"
    calibration: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    created: str = ""
    software: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if not isinstance(data, dict):
            raise ModelFileError("model card is not a JSON object")
        if data.get("format") != FORMAT:
            raise ModelFileError(f"not a twinsearch model card (format {data.get('format')!r})")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFileError(f"model file format version {version} is not supported (this encoder reads "
                                 f"version {FORMAT_VERSION})")
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("name", "architecture", "preprocess", "dim") if n not in data]
        if missing:
            raise ModelFileError(f"model card lacks {missing}")
        return cls(**{k: v for k, v in data.items() if k in names})


def shipped_models() -> dict[str, Path]:
    """The models shipped inside the package by name: {"omniglot": path, "signatures": path}."""
    folder = Path(__file__).resolve().parent / "models"
    return {p.stem: p for p in sorted(folder.glob("*.tsm"))}


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """The card of the model file at `path` as a dict (standard library only). Raises ModelFileError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        shipped = "" if os.sep in path or path.endswith(".tsm") else \
            f" (a shipped model is named {' or '.join(shipped_models())})"
        raise ModelFileError(f"model file {path!r} does not exist{shipped}")
    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(CARD_NAME)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{path!r} is not a twinsearch model file (not a zip archive: {exc}; a copy cut short "
                             "is read so too)") from exc
    except KeyError as exc:
        raise ModelFileError(f"{path!r} has no {CARD_NAME}: not a twinsearch model file") from exc
    except (OSError, zipfile.LargeZipFile, RuntimeError) as exc:
        raise ModelFileError(f"cannot read {path!r}: {exc}") from exc
    try:
        card = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path!r}: {CARD_NAME} is not valid JSON ({exc})") from exc
    ModelCard.from_dict(card)  # validates format and version
    return card


def write_model_file(path: str | os.PathLike, card: ModelCard, weights: bytes,
                     graph: bytes | None = None) -> None:
    """Write card, weights and (optionally) the ONNX graph into a zip at `path`, atomically (temporary
    file, then rename)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(CARD_NAME, json.dumps(card.to_dict(), indent=2, sort_keys=False))
        zf.writestr(WEIGHTS_NAME, weights)
        if graph is not None:
            zf.writestr(GRAPH_NAME, graph)
    os.replace(tmp, path)
