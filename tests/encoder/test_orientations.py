"""The orientation histogram appended to embeddings (heads.OrientationHistogram): its bins against a direct
computation, its share of the distance, the same embeddings from the model file's ONNX graph, and its
settings from `twinsearch train`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from twinsearch.encoder.commands import train as train_cmd
from twinsearch.encoder.heads import OrientationHistogram, build_net
from twinsearch.encoder.model import EncoderModel, load_model
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.encoder.presets import preset


def reference_histogram(images: np.ndarray, cells: tuple[int, int], bins: int) -> np.ndarray:
    """The same descriptor by angles: arctan2 of central differences (border repeated), bin k holding the
    directions in [k * 180 / bins, (k + 1) * 180 / bins) degrees less half a degree, magnitudes summed per
    cell, each row L2-normalised."""
    x = np.pad(images.mean(1).astype(np.float64), ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (x[:, 1:-1, 2:] - x[:, 1:-1, :-2]) / 2
    gy = (x[:, 2:, 1:-1] - x[:, :-2, 1:-1]) / 2
    angle = np.mod(np.arctan2(gy, gx) + math.radians(0.5), math.pi)
    which = np.minimum((angle / (math.pi / bins)).astype(int), bins - 1)
    n, h, w = gx.shape
    rows, cols = cells
    out = np.zeros((n, rows, cols, bins))
    for r in range(rows):
        for c in range(cols):
            ys, xs = slice(r * h // rows, (r + 1) * h // rows), slice(c * w // cols, (c + 1) * w // cols)
            mag, b = np.hypot(gx, gy)[:, ys, xs], which[:, ys, xs]
            for k in range(bins):
                out[:, r, c, k] = (mag * (b == k)).sum((1, 2))
    out = out.reshape(n, -1)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.mark.parametrize(("cells", "bins"), [((1, 2), 8), ((2, 3), 12), ((1, 1), 4)])
def test_histogram_equals_a_computation_by_angles(cells, bins):
    rng = np.random.default_rng(0)
    images = rng.random((6, 1, 24, 48)).astype(np.float32)
    got = OrientationHistogram(0.5, cells, bins).histogram(torch.from_numpy(images)).numpy()
    assert got.shape == (6, cells[0] * cells[1] * bins)
    np.testing.assert_allclose(got, reference_histogram(images, cells, bins), atol=1e-5)


@pytest.mark.parametrize(("direction", "expected_bin"), [("x", 0), ("y", 4), ("x + y", 2), ("x - y", 6)])
def test_straight_edges_fall_in_one_bin_of_their_half(direction, expected_bin):
    """Binarised strokes have gradients along the axes and the diagonals (`direction`: where the ink grows,
    y downwards): each lies inside one bin."""
    yy, xx = np.mgrid[:16, :32]
    img = {"x": xx >= 4, "y": yy >= 8, "x + y": xx + yy >= 12, "x - y": xx - yy >= -4}[direction].astype(np.float32)
    h = OrientationHistogram(0.5, (1, 2), 8).histogram(torch.from_numpy(img[None, None])).numpy()[0]
    left, right = h[:8], h[8:]
    assert left[expected_bin] > 0.99 * np.linalg.norm(left) > 0
    if direction == "y":  # the edge crosses both halves
        assert right[expected_bin] > 0.99 * np.linalg.norm(right) > 0
    else:  # the edge lies in the left half (the border is repeated: no edge there)
        assert not right.any()


def test_squared_distance_splits_into_embedding_and_histogram():
    gen = torch.Generator().manual_seed(0)
    orient = OrientationHistogram(0.65)
    f = F.normalize(torch.randn(2, 6, generator=gen), dim=1)
    x = torch.rand(2, 1, 16, 32, generator=gen)
    out = orient(f, x)
    assert out.shape == (2, 6 + 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    h = orient.histogram(x)
    expected = 0.35 * (f[0] - f[1]).pow(2).sum() + 0.65 * (h[0] - h[1]).pow(2).sum()
    assert float((out[0] - out[1]).pow(2).sum()) == pytest.approx(float(expected), rel=1e-5)
    # a blank image has no gradients: its row is the embedding alone, still of unit length
    blank = orient(f[:1], torch.zeros(1, 1, 16, 32))
    assert torch.allclose(blank, torch.cat([f[:1], torch.zeros(1, 16)], dim=1), atol=1e-6)


@pytest.mark.parametrize(("weight", "cells", "bins"), [(0.0, (1, 2), 8), (1.0, (1, 2), 8), (0.5, (0, 2), 8),
                                                       (0.5, (1, 2), 1)])
def test_bad_histogram_settings_are_refused(weight, cells, bins):
    with pytest.raises(ValueError, match="orientation histogram"):
        OrientationHistogram(weight, cells, bins)


ARCH = {"backbone": "conv4", "backbone_args": {"input_size": 24, "input_width": 48, "widths": [8, 8], "pool": "avg"},
        "dim": 8, "tta_shifts": [[1, 0], [-1, 0]], "orientations": {"weight": 0.65, "cells": [1, 2], "bins": 8}}


def test_a_model_file_with_a_histogram_runs_the_same_from_its_graph(tmp_path):
    net = build_net(ARCH)
    assert net.dim == 8 + 16 and not [n for n in net.state_dict() if n.startswith("orientations")]
    model = EncoderModel.create(net, ARCH, Preprocess(width=48, height=24, invert=True), "o")
    model.save(tmp_path / "o.tsm", graph=True)
    graph = load_model(tmp_path / "o.tsm", runtime="onnxruntime")
    plain = load_model(tmp_path / "o.tsm", runtime="torch")
    assert graph.runtime == "onnxruntime" and graph.dim == 24
    rng = np.random.default_rng(1)
    x = (rng.random((12, 1, 24, 48)) > 0.7).astype(np.float32)  # binarised: gradients on the axes and diagonals
    np.testing.assert_allclose(graph.embed_arrays(x), plain.embed_arrays(x), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(plain.embed_arrays(x), axis=1), 1.0, atol=1e-5)


def test_learned_part_is_the_heads_embedding_and_training_sees_only_it():
    arch = {k: v for k, v in ARCH.items() if k != "tta_shifts"}
    net = build_net(arch).eval()
    x = torch.rand(5, 1, 24, 48)
    with torch.no_grad():
        head = net.head(net.backbone(x)).numpy()
        full = net(x).numpy()
    np.testing.assert_allclose(net.learned_part(full), head, atol=1e-5)
    net.train()
    assert net(x).shape == (5, 8)


def _parse(argv):
    parser = train_cmd.argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return train_cmd.parse_args(parser, argv)


def test_train_flags_set_the_histogram_and_the_signatures_preset_uses_it():
    config = train_cmd._config(_parse(["--data", "d", "--out", "o", "--orientation-weight", "0.4",
                                       "--orientation-cells", "2", "3", "--orientation-bins", "6"]))
    assert (config.orientation_weight, config.orientation_cells, config.orientation_bins) == (0.4, [2, 3], 6)
    assert train_cmd._config(_parse(["--data", "d", "--out", "o"])).orientation_weight == 0.0
    assert preset("signatures")["orientation_weight"] == 0.65
    assert _parse(["--preset", "signatures", "--data", "d", "--out", "o"]).orientation_weight == 0.65


@pytest.mark.parametrize("flags", [["--orientation-weight", "1"], ["--orientation-weight", "-0.1"],
                                   ["--orientation-weight", "0.5", "--orientation-bins", "1"],
                                   ["--orientation-weight", "0.5", "--orientation-cells", "0", "2"]])
def test_bad_histogram_flags_are_usage_errors(flags, capsys):
    assert train_cmd.run(_parse(["--data", "d", "--out", "o", *flags])) == 2
    assert "orientation" in capsys.readouterr().err
