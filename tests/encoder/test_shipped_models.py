"""The models shipped in the package, found by name, and the signature model's card."""

from __future__ import annotations

import numpy as np
import pytest

from twinsearch.encoder.errors import ModelFileError
from twinsearch.encoder.model import default_model_path, load_model, resolve_model_path, shipped_models

from .test_ink import scribble


def test_shipped_models_by_name(tmp_path, monkeypatch):
    models = shipped_models()
    assert {"omniglot", "signatures"} <= set(models)
    assert resolve_model_path(None) == default_model_path() == models["omniglot"]
    assert resolve_model_path("signatures") == models["signatures"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "signatures").write_bytes(b"not a model")  # an existing file wins over the shipped name
    assert resolve_model_path("signatures").resolve() == tmp_path / "signatures"
    with pytest.raises(ModelFileError):
        load_model("signatures")
    with pytest.raises(ModelFileError, match=r"does not exist \(a shipped model is named omniglot or signatures\)"):
        load_model("no-such-model")
    with pytest.raises(ModelFileError, match=r"does not exist$"):  # a path: no shipped name meant
        load_model(tmp_path / "no-such-model.tsm")


def test_signature_model_card_and_scan_independence():
    model = load_model("signatures", device="cpu")
    card = model.card
    assert card.training["preset"] == "signatures" and "--preset signatures" in card.training["command"]
    assert "sigcomp2011" in card.data["train"]["source"] and card.data["train"]["forgery_classes"] > 0
    assert card.training["elapsed_s"] <= 20 * 60 + 5  # within the 20-minute budget
    assert model.preprocess.background_removal == "otsu" and model.preprocess.binarize == "otsu"
    assert model.preprocess.shape == (1, 96, 192) and model.calibration is not None
    # the page's grey level and the ink's darkness cannot move the embedding
    a = scribble(7, background=241, ink=120)
    b = scribble(7, background=255, ink=20)
    e = model.embed([a, b])
    assert float(np.linalg.norm(e[0] - e[1])) == pytest.approx(0.0, abs=1e-6)
