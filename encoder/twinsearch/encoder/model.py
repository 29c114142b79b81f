"""A trained encoder ready to serve: network, preprocessing, card and calibration.

    m = load_model()                      # the default Omniglot model shipped in the package
    e = m.embed([png_bytes, pil_image])   # (2, m.dim) float32, L2-normalised rows
    d = np.linalg.norm(e[0] - e[1])       # Euclidean, in [0, 2], smaller = more alike

`embed` and `embed_arrays` are safe to call from several threads at once (inference only, no state).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .calibration import Calibration
from .card import CARD_NAME, GRAPH_NAME, WEIGHTS_NAME, ModelCard, read_card, shipped_models, write_model_file
from .errors import ImageFormatError, ModelFileError
from .heads import EmbeddingNet, build_net
from .preprocess import ImageInput, Preprocess
from .runtime import GraphRunner, graph_bytes, graph_runner

log = logging.getLogger(__name__)

DEFAULT_MODEL = "omniglot.tsm"

__all__ = ["EncoderModel", "ModelCard", "default_model_path", "fingerprint_of", "load_model", "read_card",
           "read_weights", "resolve_model_path", "shipped_models"]


def default_model_path() -> Path:
    """Path of the default model shipped inside the package (trained on Omniglot)."""
    return Path(__file__).resolve().parent / "models" / DEFAULT_MODEL


def resolve_model_path(path: str | os.PathLike | None) -> Path:
    """A model file's path: None is the default model; a name that is no file but names a shipped model
    ("signatures") is that model; anything else is taken as a path."""
    if path is None:
        return default_model_path()
    p = Path(path)
    if not p.exists() and str(path) in shipped_models():
        return shipped_models()[str(path)]
    return p


def fingerprint_of(state_dict: dict[str, torch.Tensor], architecture: dict, preprocess: Preprocess) -> str:
    """Hex SHA-256 (first 16 hex digits) of the architecture, preprocessing and every weight tensor."""
    h = hashlib.sha256()
    h.update(json.dumps(architecture, sort_keys=True, separators=(",", ":")).encode())
    h.update(preprocess.canonical_json().encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class EncoderModel:
    """An embedding network with its preprocessing and card. Use `load_model` or `EncoderModel.create`."""

    metric = "euclidean"

    def __init__(self, net: EmbeddingNet, card: ModelCard, device: str | torch.device | None = None,
                 batch_size: int = 256, runner: GraphRunner | None = None):
        self.device = _pick_device(device)
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()
        self.card = card
        self.preprocess = Preprocess.from_dict(card.preprocess)
        self.calibration = Calibration.from_dict(card.calibration) if card.calibration else None
        self.batch_size = batch_size
        self._runner = runner  # the ONNX graph on CPU (runtime.py); None: PyTorch runs `net`

    @property
    def runtime(self) -> str:
        """What runs the network: "onnxruntime" (the model file's graph, on CPU) or "torch"."""
        return "torch" if self._runner is None else "onnxruntime"

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self.card.name

    @property
    def fingerprint(self) -> str:
        return self.card.fingerprint

    @property
    def dim(self) -> int:
        return int(self.card.dim)

    # ------------------------------------------------------------------ inference
    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Preprocess and embed images (bytes, PIL images or arrays): (n, dim) float32, L2-normalised rows.

        Raises an ImageError subclass naming the first bad image's position."""
        arrays = np.empty((len(images),) + self.preprocess.shape, dtype=np.float32)
        for i, image in enumerate(images):
            try:
                arrays[i] = self.preprocess.load(image)
            except ValueError as exc:
                raise type(exc)(f"image {i}: {exc}") from exc
        return self.embed_arrays(arrays)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """(n, C, H, W) float32 preprocessed images -> (n, dim) float32 C-contiguous L2-normalised rows."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.preprocess.shape:
            raise ImageFormatError(f"batch must have shape (n, {', '.join(map(str, self.preprocess.shape))}), "
                                   f"got {tuple(batch.shape)}")
        if batch.dtype != np.float32:
            batch = batch.astype(np.float32)
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        if self._runner is not None:
            for s in range(0, len(batch), self.batch_size):
                out[s:s + self.batch_size] = self._runner(batch[s:s + self.batch_size])
            return out
        with torch.inference_mode():
            for s in range(0, len(batch), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(batch[s:s + self.batch_size])).to(self.device)
                x = x.contiguous(memory_format=torch.channels_last)
                out[s:s + len(x)] = self.net(x).float().cpu().numpy()
        return out

    # ------------------------------------------------------------------ files
    @classmethod
    def create(cls, net: EmbeddingNet, architecture: dict, preprocess: Preprocess, name: str,
               **card_fields) -> EncoderModel:
        """Wrap a trained network: fills dim, preprocessing, fingerprint, creation time and versions."""
        net = net.cpu().eval()
        card = ModelCard(
            name=name, architecture=architecture, preprocess=preprocess.to_dict(), dim=net.dim,
            fingerprint=fingerprint_of(net.state_dict(), architecture, preprocess),
            created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            software={"torch": torch.__version__, "numpy": np.__version__},
            **card_fields,
        )
        return cls(net, card, device="cpu")

    def save(self, path: str | os.PathLike, *, graph: bool = False) -> None:
        """Write the model file (zip: card.json + weights.pt). `graph`: also export the network to ONNX
        (graph.onnx, a second or two) so that `load_model` runs it with ONNX Runtime on CPU; a network
        that cannot be exported is saved without it, with a warning."""
        buf = io.BytesIO()
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        torch.save(state, buf)
        onnx = graph_bytes(self.net, self.preprocess.shape) if graph else None
        write_model_file(path, self.card, buf.getvalue(), graph=onnx)


def load_model(path: str | os.PathLike | None = None, device: str | torch.device | None = None,
               runtime: str = "auto") -> EncoderModel:
    """Load a model file (None: the default model; a shipped model's name, such as "signatures", where no
    such file exists). Checks the card, the architecture and the fingerprint; raises ModelFileError when
    the file is missing, corrupt or incompatible. `device` None: cuda if present.

    `runtime`: "auto" runs the file's ONNX graph with ONNX Runtime when the model is on the CPU and the
    graph agrees with the weights (runtime.py), PyTorch otherwise; "torch" always PyTorch; "onnxruntime"
    the graph or a ModelFileError saying why not. The graph uses torch's thread count at load time."""
    path = resolve_model_path(path)
    card, preprocess, net, graph = _read_model_file(path)
    device = _pick_device(device)
    try:
        runner = graph_runner(graph, net.eval(), preprocess.shape, runtime=runtime, device=device,
                              source=repr(str(path)))
    except ValueError as exc:
        raise ModelFileError(f"{str(path)!r} cannot run with onnxruntime: {exc}") from exc
    model = EncoderModel(net, card, device=device, runner=runner)
    log.info("loaded model %s (%s) from %s, run by %s", card.name, card.fingerprint, path, model.runtime)
    return model


def _read_model_file(path: Path) -> tuple[ModelCard, Preprocess, EmbeddingNet, bytes | None]:
    """The card, preprocessing, network (weights loaded, fingerprint checked) and ONNX graph (or None) of
    a model file; ModelFileError when it is missing, corrupt or does not fit its card."""
    card = ModelCard.from_dict(read_card(path))
    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(WEIGHTS_NAME)
            graph = zf.read(GRAPH_NAME) if GRAPH_NAME in zf.namelist() else None
    except KeyError as exc:
        raise ModelFileError(f"{str(path)!r} has {CARD_NAME} but no {WEIGHTS_NAME}") from exc
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise ModelFileError(f"cannot read the weights in {str(path)!r}: {exc}") from exc
    not_weights = ModelFileError(f"{str(path)!r} is corrupt or not a twinsearch model file: its {WEIGHTS_NAME} "
                                 "does not hold plain tensors")
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad pickles
        # Not torch's message: for anything but tensors it advises loading with weights_only=False,
        # which would run whatever code the file holds. A model file never needs that.
        log.debug("torch.load of the weights in %s failed: %s", path, exc)
        raise not_weights from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise not_weights
    try:
        preprocess = Preprocess.from_dict(card.preprocess)
        net = build_net(card.architecture)
        net.load_state_dict(state, strict=True)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ModelFileError(f"{str(path)!r} does not fit its architecture {card.architecture}: {exc}") from exc
    found = fingerprint_of(state, card.architecture, preprocess)
    if found != card.fingerprint:
        raise ModelFileError(f"{str(path)!r}: weights fingerprint {found} differs from the card's "
                             f"{card.fingerprint}; the file is corrupt or was altered")
    if net.dim != card.dim:
        raise ModelFileError(f"{str(path)!r}: card says dim {card.dim}, network gives {net.dim}")
    return card, preprocess, net, graph


def read_weights(path: str | os.PathLike) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """A model file's card and weights (checked as `load_model` checks them), to start training from:
    `twinsearch train --init MODEL`. `path` may name a shipped model."""
    card, _, net, _ = _read_model_file(resolve_model_path(path))
    return card, net.state_dict()
