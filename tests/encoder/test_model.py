from __future__ import annotations

import collections
import io
import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from twinsearch.encoder.calibration import Calibration
from twinsearch.encoder.card import read_card
from twinsearch.encoder.errors import ImageDecodeError, ImageFormatError, ModelFileError
from twinsearch.encoder.heads import build_net
from twinsearch.encoder.model import EncoderModel, load_model
from twinsearch.encoder.preprocess import Preprocess

from .conftest import REPO, glyph, png_bytes

ARCH = {"backbone": "conv4", "backbone_args": {"in_channels": 1, "input_size": 16, "widths": [8, 8]}, "dim": 12,
        "head_args": {}}


@pytest.fixture()
def tiny_model_file(tmp_path):
    torch.manual_seed(0)
    net = build_net(ARCH)
    pre = Preprocess(width=16, height=16, invert=True)
    rng = np.random.default_rng(0)
    cal = Calibration.fit(rng.uniform(0, 1, 50), rng.uniform(0.8, 2, 80))
    model = EncoderModel.create(net, ARCH, pre, "tiny", calibration=cal.to_dict(),
                                training={"command": "twinsearch train --steps 1"})
    path = tmp_path / "tiny.tsm"
    model.save(path)
    return path, model


def test_save_load_embed(tiny_model_file):
    path, original = tiny_model_file
    m = load_model(path, device="cpu")
    assert m.name == "tiny" and m.dim == 12 and m.metric == "euclidean"
    assert m.fingerprint == original.fingerprint and len(m.fingerprint) == 16
    assert isinstance(m.calibration, Calibration) and m.preprocess.shape == (1, 16, 16)
    from PIL import Image

    images = [png_bytes(Image.fromarray(glyph(0, 0))), Image.fromarray(glyph(1, 0)), glyph(2, 0)]
    e = m.embed(images)
    assert e.shape == (3, 12) and e.dtype == np.float32 and e.flags["C_CONTIGUOUS"]
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    batch = np.stack([m.preprocess.load(x) for x in images])
    assert np.allclose(m.embed_arrays(batch), e, atol=1e-6)
    assert np.allclose(original.embed(images), e, atol=1e-6)
    json.dumps(m.card.to_dict())
    with pytest.raises(ImageDecodeError, match="image 1"):
        m.embed([images[0], b"junk"])
    with pytest.raises(ImageFormatError):
        m.embed_arrays(np.zeros((2, 3, 16, 16), np.float32))


def test_card_readable_without_torch(tiny_model_file):
    path, _ = tiny_model_file
    code = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
            "from twinsearch.encoder.card import read_card\n"
            f"c = read_card({str(path)!r}); print(c['name'], c['dim'], c['metric'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "encoder")}, check=True)
    assert out.stdout.split() == ["tiny", "12", "euclidean"]
    assert read_card(path)["calibration"]["genuine_pairs"] == 50


def _rewrite(src, dst, card=None, weights=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "card.json" and card is not None:
                data = json.dumps(card(json.loads(data))).encode()
            if name == "weights.pt" and weights is not None:
                data = weights(data)
            zout.writestr(name, data)


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _zero_pickle(weights: bytes) -> bytes:
    """The weights with their pickle (data.pkl inside torch's zip) overwritten by zero bytes."""
    src, out = zipfile.ZipFile(io.BytesIO(weights)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, bytes(len(data)) if info.filename.endswith("data.pkl") else data)
    return out.getvalue()


def test_corrupt_and_incompatible_files(tiny_model_file, tmp_path):
    path, _ = tiny_model_file
    cases = {
        "missing": (lambda p: None, "does not exist"),
        "truncated": (lambda p: p.write_bytes(path.read_bytes()[:200]), "not a zip"),
        "garbage": (lambda p: p.write_bytes(b"hello"), "not a zip"),
        "version": (lambda p: _rewrite(path, p, card=lambda c: {**c, "format_version": 99}), "version 99"),
        "format": (lambda p: _rewrite(path, p, card=lambda c: {**c, "format": "other"}), "not a twinsearch"),
        "arch": (lambda p: _rewrite(path, p, card=lambda c: {**c, "architecture": {**c["architecture"], "dim": 7}}),
                 "does not fit"),
        "weights": (lambda p: _rewrite(path, p, weights=lambda w: w[:100]), "corrupt or not a twinsearch"),
        # weights that are not tensors, or a damaged pickle: torch would advise weights_only=False
        "numpy": (lambda p: _rewrite(path, p, weights=lambda w: _saved({"x": np.zeros(3)})), "corrupt or not a"),
        "pickle": (lambda p: _rewrite(path, p, weights=lambda w: pickle.dumps(collections.Counter("ab"), protocol=2)),
                   "corrupt or not a"),
        "flipped": (lambda p: _rewrite(path, p, weights=lambda w: _zero_pickle(w)), "corrupt or not a"),
        "list": (lambda p: _rewrite(path, p, weights=lambda w: _saved([1, 2])), "corrupt or not a"),
    }
    for name, (make, message) in cases.items():
        p = tmp_path / f"{name}.tsm"
        make(p)
        with pytest.raises(ModelFileError, match=message) as error:
            load_model(p)
        assert "weights_only" not in str(error.value) and "torch.load" not in str(error.value), name

    # same shapes, altered values: caught by the fingerprint
    state = torch.load(zipfile.ZipFile(path).open("weights.pt"), weights_only=True)
    state["head.linear.bias"] += 1

    def swap(_):
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()

    p = tmp_path / "altered.tsm"
    _rewrite(path, p, weights=swap)
    with pytest.raises(ModelFileError, match="fingerprint"):
        load_model(p)
