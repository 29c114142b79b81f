"""The encoder's inference graph: exported into the model file, run with ONNX Runtime on CPU.

On a 2-core CPU, ONNX Runtime runs the small conv nets of this project three to five times faster than
eager PyTorch (a verify call's forward pass: about 1 ms against 5 ms; `bench/latency.py` measures it), so
a model file may carry its network as an ONNX graph (`graph.onnx` beside `weights.pt`) and `load_model`
runs that graph when it can:

- on CPU only (on a GPU, PyTorch runs the network);
- when `onnxruntime` is importable;
- when the graph gives the same embeddings as the weights: at load, a fixed batch goes through both and
  every value must agree within `AGREEMENT` (the card's fingerprint covers the weights, not the graph,
  so a graph that does not belong to its weights is caught here, and PyTorch serves instead).

`export_graph(net, shape)` exports a network (with its test-time views, batch size free) to ONNX bytes;
`add_graph(path)` writes the graph into an existing model file, leaving card and weights as they are.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile

import numpy as np
import torch

from .card import GRAPH_NAME, WEIGHTS_NAME, ModelCard, read_card, write_model_file

log = logging.getLogger(__name__)

AGREEMENT = 1e-5  # largest absolute difference allowed between graph and weights, per embedding value
RUNTIMES = ("auto", "torch", "onnxruntime")


def export_graph(net: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
    """The ONNX graph of `net` in evaluation mode for inputs of shape (n, *shape), n free."""
    import copy

    net = copy.deepcopy(net).cpu().eval().to(memory_format=torch.contiguous_format)
    example = torch.zeros((2,) + tuple(shape), dtype=torch.float32)
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net, (example,), dynamo=True, verbose=False, optimize=True,
                                        input_names=["images"], output_names=["embeddings"],
                                        dynamic_shapes=({0: torch.export.Dim("n")},))
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    return program.model_proto.SerializeToString()


def read_graph(path: str | os.PathLike) -> bytes | None:
    """The graph stored in the model file at `path`, or None when it has none."""
    with zipfile.ZipFile(path) as zf:
        try:
            return zf.read(GRAPH_NAME)
        except KeyError:
            return None


def add_graph(path: str | os.PathLike) -> bytes:
    """Export the network of the model file at `path` and store the graph in it (atomically). Returns it."""
    from .model import load_model

    model = load_model(path, device="cpu", runtime="torch")
    graph = export_graph(model.net, model.preprocess.shape)
    with zipfile.ZipFile(path) as zf:
        weights = zf.read(WEIGHTS_NAME)
    write_model_file(path, ModelCard.from_dict(read_card(path)), weights, graph=graph)
    return graph


class GraphRunner:
    """Runs an ONNX graph on CPU with ONNX Runtime: (n, C, H, W) float32 -> (n, dim) float32."""

    def __init__(self, graph: bytes, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        # Idle pool threads sleep instead of spinning: on a small CPU a spinning pool takes the cores that
        # the gallery search (FAISS, OpenMP) and the request threads need right after a forward pass.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def graph_runner(graph: bytes | None, net: torch.nn.Module, shape: tuple[int, ...], *, runtime: str,
                 device: torch.device, source: str) -> GraphRunner | None:
    """The runner to use for a model loaded from `source`, or None for PyTorch.

    runtime "torch": None. "onnxruntime": the graph must be there and usable (ValueError otherwise).
    "auto": the graph when it is there, the device is the CPU, onnxruntime imports and the graph agrees
    with the weights; None otherwise (with a log line saying why when a graph was there)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch" or (runtime == "auto" and (graph is None or device.type != "cpu")):
        return None
    try:
        if graph is None:
            raise ValueError(f"{source} holds no {GRAPH_NAME}")
        if device.type != "cpu":
            raise ValueError(f"the graph runs on the CPU, the model is on {device}")
        try:
            runner = GraphRunner(graph, torch.get_num_threads())
        except ImportError as exc:
            raise ValueError("onnxruntime is not installed (pip install 'twinsearch[server]')") from exc
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad graphs
            raise ValueError(f"its {GRAPH_NAME} does not load: {exc}") from exc
        gap = disagreement(runner, net, shape)
        if not gap <= AGREEMENT:
            raise ValueError(f"its {GRAPH_NAME} differs from its weights by up to {gap:.2e} "
                             f"(allowed {AGREEMENT:.0e})")
    except ValueError as exc:
        if runtime == "onnxruntime":
            raise
        log.warning("%s: %s; PyTorch runs the network instead", source, exc)
        return None
    return runner


def disagreement(runner: GraphRunner, net: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Largest absolute difference between the graph's and the network's embeddings of a fixed batch."""
    rng = np.random.default_rng(0)
    batch = rng.random((3,) + tuple(shape), dtype=np.float32)
    with torch.inference_mode():
        expected = net(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)).float().numpy()
    got = runner(batch)
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got - expected).max())


def graph_bytes(net: torch.nn.Module, shape: tuple[int, ...]) -> bytes | None:
    """`export_graph`, or None (with a warning) when the network cannot be exported."""
    try:
        return export_graph(net, shape)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the file stays usable
        log.warning("the network could not be exported to ONNX (%s): the model file holds weights only, "
                    "and PyTorch will run it", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None


__all__ = ["AGREEMENT", "GRAPH_NAME", "RUNTIMES", "GraphRunner", "add_graph", "export_graph", "graph_runner",
           "read_graph"]
