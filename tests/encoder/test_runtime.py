"""The ONNX graph in a model file: exported for every backbone, run by ONNX Runtime on CPU with the
embeddings PyTorch gives (to 1e-5), and refused when it does not belong to its weights."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest
import torch

from twinsearch.encoder.card import CARD_NAME, GRAPH_NAME, WEIGHTS_NAME
from twinsearch.encoder.errors import ModelFileError
from twinsearch.encoder.heads import build_net
from twinsearch.encoder.model import EncoderModel, load_model, shipped_models
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.encoder.runtime import AGREEMENT, add_graph, read_graph

from .conftest import glyph

SIDE = 20
ARCHITECTURES = {
    "conv4, shifted views": {"backbone": "conv4", "backbone_args": {"in_channels": 1, "input_size": SIDE,
                                                                   "widths": [8, 8]},
                             "dim": 12, "head_args": {}, "tta_shifts": [[2, 0], [0, -2]]},
    "koch": {"backbone": "koch", "backbone_args": {"in_channels": 1, "input_size": 105}, "dim": 16,
             "head_args": {}},
    "signet, mirrored views": {"backbone": "signet", "backbone_args": {"in_channels": 1, "input_size": 80,
                                                                      "input_width": 160},
                               "dim": 16, "head_args": {}, "tta_flip": True},
    "resnet, strided stem": {"backbone": "resnet", "backbone_args": {"in_channels": 3, "widths": [8, 16],
                                                                    "blocks_per_stage": 1, "input_size": SIDE,
                                                                    "stem_stride": 2},
                             "dim": 10, "head_args": {}},
    "class posterior": {"backbone": "conv4", "backbone_args": {"in_channels": 1, "widths": [8, 8],
                                                               "input_size": SIDE},
                        "dim": 8, "head_args": {}, "posterior": {"classes": 5, "weight": 0.75, "temperature": 8.0}},
}


def _preprocess(arch: dict) -> Preprocess:
    args = arch["backbone_args"]
    height = args["input_size"]
    width = args.get("input_width", height)
    return Preprocess(width=width, height=height, channels=args["in_channels"], invert=args["in_channels"] == 1)


def _save(tmp_path, arch: dict, *, graph: bool, name: str = "m") -> tuple:
    torch.manual_seed(0)
    net = build_net(arch)
    if getattr(net, "posterior", None) is not None:
        net.posterior.proxies.copy_(torch.randn_like(net.posterior.proxies))
    model = EncoderModel.create(net, arch, _preprocess(arch), name)
    path = tmp_path / f"{name}.tsm"
    model.save(path, graph=graph)
    return path, model


def _batch(model, n: int = 6) -> np.ndarray:
    return np.random.default_rng(1).random((n,) + model.preprocess.shape, dtype=np.float32)


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_the_graph_gives_pytorchs_embeddings(tmp_path, kind):
    path, _ = _save(tmp_path, ARCHITECTURES[kind], graph=True)
    fast = load_model(path, device="cpu")
    reference = load_model(path, device="cpu", runtime="torch")
    assert fast.runtime == "onnxruntime" and reference.runtime == "torch"
    assert fast.fingerprint == reference.fingerprint
    for n in (1, 2, 7):  # the batch size is free in the graph
        batch = _batch(reference, n)
        got, want = fast.embed_arrays(batch), reference.embed_arrays(batch)
        assert got.shape == want.shape == (n, reference.dim) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=AGREEMENT)


def test_a_file_without_a_graph_runs_on_pytorch(tmp_path):
    path, _ = _save(tmp_path, ARCHITECTURES["conv4, shifted views"], graph=False)
    assert read_graph(path) is None
    assert load_model(path, device="cpu").runtime == "torch"
    with pytest.raises(ModelFileError, match="holds no graph.onnx"):
        load_model(path, device="cpu", runtime="onnxruntime")


def test_add_graph_keeps_card_and_weights(tmp_path):
    path, model = _save(tmp_path, ARCHITECTURES["conv4, shifted views"], graph=False)
    with zipfile.ZipFile(path) as zf:
        before = {name: zf.read(name) for name in (CARD_NAME, WEIGHTS_NAME)}
    add_graph(path)
    with zipfile.ZipFile(path) as zf:
        assert {name: zf.read(name) for name in (CARD_NAME, WEIGHTS_NAME)} == before
        assert GRAPH_NAME in zf.namelist()
    loaded = load_model(path, device="cpu")
    assert loaded.runtime == "onnxruntime" and loaded.fingerprint == model.fingerprint


def test_a_graph_of_other_weights_is_refused(tmp_path, caplog):
    arch = ARCHITECTURES["conv4, shifted views"]
    path, _ = _save(tmp_path, arch, graph=False, name="mine")
    torch.manual_seed(5)
    other = EncoderModel.create(build_net(arch), arch, _preprocess(arch), "other")
    other_path = tmp_path / "other.tsm"
    other.save(other_path, graph=True)
    with zipfile.ZipFile(path, "a") as zf:  # the other model's graph beside this model's weights
        zf.writestr(GRAPH_NAME, read_graph(other_path))
    with caplog.at_level(logging.WARNING, logger="twinsearch.encoder.runtime"):
        model = load_model(path, device="cpu")
    assert model.runtime == "torch"
    assert "differs from its weights" in caplog.text
    with pytest.raises(ModelFileError, match="differs from its weights"):
        load_model(path, device="cpu", runtime="onnxruntime")
    reference = load_model(path, device="cpu", runtime="torch")
    np.testing.assert_array_equal(model.embed_arrays(_batch(model)), reference.embed_arrays(_batch(model)))


def test_a_corrupt_graph_falls_back(tmp_path, caplog):
    path, _ = _save(tmp_path, ARCHITECTURES["conv4, shifted views"], graph=False)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(GRAPH_NAME, b"not an onnx graph")
    with caplog.at_level(logging.WARNING, logger="twinsearch.encoder.runtime"):
        assert load_model(path, device="cpu").runtime == "torch"
    assert "does not load" in caplog.text


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_shipped_models_carry_a_graph_that_agrees(name):
    fast = load_model(name, device="cpu")
    reference = load_model(name, device="cpu", runtime="torch")
    assert fast.runtime == "onnxruntime"
    from PIL import Image

    images = [Image.fromarray(glyph(c, v, size=64)) for c in range(3) for v in range(2)]
    np.testing.assert_allclose(fast.embed(images), reference.embed(images), rtol=0, atol=AGREEMENT)


def test_unknown_runtime_is_refused(tmp_path):
    path, _ = _save(tmp_path, ARCHITECTURES["conv4, shifted views"], graph=False)
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_model(path, device="cpu", runtime="tensorrt")
