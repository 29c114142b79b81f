"""The model shipped in the package loads and embeds; its card says how it was made and how good it is."""

from __future__ import annotations

import zipfile

import numpy as np

from twinsearch.encoder.card import read_card
from twinsearch.encoder.model import default_model_path, load_model

from .conftest import OMNIGLOT_SMALL2


def test_default_model_card():
    path = default_model_path()
    assert path.is_file() and path.stat().st_size < 5_000_000
    card = read_card(path)
    assert card["metric"] == "euclidean"
    assert card["training"]["command"].startswith("twinsearch ") and " train " in card["training"]["command"]
    assert "images_background_small1" in card["training"]["command"]
    assert card["data"]["train"]["images"] <= 2720
    cal = card["calibration"]
    assert set(cal["points"]) == {"eer", "far_1", "far_0_1"} and cal["genuine_pairs"] > 10_000
    assert card["evaluation"]["oneshot"]["within_group"] is True


def test_default_model_embeds_held_out_characters():
    model = load_model(device="cpu")
    assert model.calibration is not None and model.preprocess.invert
    with zipfile.ZipFile(OMNIGLOT_SMALL2) as zf:
        names = sorted(n for n in zf.namelist() if "/Tagalog/" in n and n.endswith(".png"))
        a = [zf.read(n) for n in names if "/character01/" in n][:3]
        b = [zf.read(n) for n in names if "/character02/" in n][:3]
    e = model.embed(a + b)
    assert e.shape == (6, model.dim) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    d = np.linalg.norm(e[:, None] - e[None], axis=2)
    same = np.mean([d[0, 1], d[0, 2], d[1, 2], d[3, 4], d[3, 5], d[4, 5]])
    different = d[:3, 3:].mean()
    assert same < different
