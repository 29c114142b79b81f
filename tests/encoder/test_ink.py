"""Ink-on-paper preprocessing (background removal, binarisation, crop to the ink, wide inputs) and the
shortcut statistics that warn when genuine images and forgeries differ by the scan alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from twinsearch.encoder.evaluation.shortcuts import (
    SHORTCUT_AUC,
    input_statistics,
    raw_statistics,
    shortcut_statistics,
)
from twinsearch.encoder.preprocess import Preprocess, otsu_threshold

from .conftest import png_bytes

SIGNATURE = Preprocess(height=24, width=48, resize="fit", invert=True, background_removal="otsu", crop_to_ink=True)


def scribble(seed: int, background: int = 255, ink: int = 40, size: tuple[int, int] = (60, 140)) -> np.ndarray:
    """A wide "signature": a few dark strokes on a flat background, uint8 (H, W), placed off-centre."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full(size, background, dtype=np.uint8)
    for _ in range(4):
        r0, r1 = rng.integers(h // 4, h // 2, size=2)
        c0, c1 = rng.integers(w // 8, w // 2, size=2)
        rr = np.linspace(r0, r1, 80).astype(int)
        cc = np.linspace(c0, c1, 80).astype(int)
        img[rr, cc] = ink
        img[rr + 1, cc] = ink
    return img


def test_otsu_threshold_splits_two_levels():
    img = np.full((10, 10), 0.9, dtype=np.float32)
    img[:3] = 0.2
    t = otsu_threshold(img)
    assert 0.2 <= t < 0.9
    assert ((img <= t) == (img < 0.5)).all()
    assert otsu_threshold(np.full((4, 4), 0.7, dtype=np.float32)) == 0.5


def test_background_level_is_removed():
    """Forgeries that differ only by a whiter page must reach the network as the very same input."""
    grey, white = scribble(1, background=241), scribble(1, background=255)
    a, b = SIGNATURE.to_unit(png_bytes(Image.fromarray(grey))), SIGNATURE.to_unit(png_bytes(Image.fromarray(white)))
    assert np.array_equal(a, b)
    plain = Preprocess(height=24, width=48, resize="fit", invert=True)
    assert not np.array_equal(plain.to_unit(grey), plain.to_unit(white))  # without removal they differ


def test_removal_keeps_ink_grey_levels_and_binarise_does_not():
    img = scribble(2, background=230, ink=90)
    kept = Preprocess(height=60, width=140, background_removal="otsu").to_unit(img)[0]
    assert kept.max() == pytest.approx(1.0)  # paper -> white
    assert np.isclose(kept, 90 / 255, atol=1e-6).any()  # ink keeps its grey level
    binary = Preprocess(height=60, width=140, binarize="otsu").to_unit(img)[0]
    assert set(np.unique(binary)) == {0.0, 1.0}
    fixed = Preprocess(height=60, width=140, binarize=0.2).to_unit(img)[0]
    assert fixed.min() == 1.0  # ink at 90/255 is lighter than the fixed level 0.2: no ink at all


def test_crop_to_ink_centres_the_signature():
    img = scribble(3)
    moved = np.full((60, 140), 255, dtype=np.uint8)
    moved[:, 40:] = img[:, :100]  # the same strokes, shifted right
    a, b = SIGNATURE.to_unit(img), SIGNATURE.to_unit(moved)
    assert np.array_equal(a, b)
    x = a[0]
    cols = np.flatnonzero(x.max(0) > 0.05)
    rows = np.flatnonzero(x.max(1) > 0.05)
    # centred: equal margins (to a pixel) on both sides of the longer-fitting axis
    assert abs(cols[0] - (47 - cols[-1])) <= 2 or abs(rows[0] - (23 - rows[-1])) <= 2
    blank = SIGNATURE.to_unit(np.full((30, 50), 255, dtype=np.uint8))
    assert blank.shape == (1, 24, 48) and blank.max() == 0.0


def test_wide_input_and_card_round_trip():
    assert SIGNATURE.shape == (1, 24, 48)
    again = Preprocess.from_dict(json.loads(json.dumps(SIGNATURE.to_dict())))
    assert again == SIGNATURE and again.canonical_json() == SIGNATURE.canonical_json()
    # the fields' defaults stay out of the fingerprint text: older model files keep their fingerprints
    assert "binarize" not in Preprocess().canonical_json()
    assert "background_removal" in SIGNATURE.canonical_json()


def _ink_box(x: np.ndarray) -> tuple[int, int]:
    """(height, width) of the ink's bounding box in a (1, H, W) inverted input."""
    rows, cols = np.flatnonzero(x[0].max(1) > 0.05), np.flatnonzero(x[0].max(0) > 0.05)
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_scale_mode_keeps_sizes_comparable_and_fit_does_not():
    """The same strokes written twice as large: "fit" makes them the same input, "scale" keeps one twice
    the other; an image too large for the input at the factor is fitted into it."""
    small = scribble(4, size=(60, 140))
    large = np.asarray(Image.fromarray(small).resize((280, 120), Image.Resampling.NEAREST))
    fit = Preprocess(height=48, width=96, resize="fit", invert=True, binarize="otsu", crop_to_ink=True)
    scale = Preprocess(height=48, width=96, resize="scale", resize_scale=0.5, invert=True, binarize="otsu",
                       crop_to_ink=True)
    fs, fl = _ink_box(fit.to_unit(small)), _ink_box(fit.to_unit(large))
    assert abs(fs[0] - fl[0]) <= 1 and abs(fs[1] - fl[1]) <= 1
    (hs, ws), (hl, wl) = _ink_box(scale.to_unit(small)), _ink_box(scale.to_unit(large))
    assert 1.8 <= wl / ws <= 2.2 and 1.6 <= hl / hs <= 2.4
    huge = np.asarray(Image.fromarray(small).resize((1400, 600), Image.Resampling.NEAREST))
    out = scale.to_unit(huge)
    assert out.shape == (1, 48, 96)
    h, w = _ink_box(out)
    assert w >= 90 or h >= 44  # fitted: it fills the input along one side, not cut off
    again = Preprocess.from_dict(json.loads(json.dumps(scale.to_dict())))
    assert again == scale and '"resize_scale":0.5' in scale.canonical_json()
    assert "resize_scale" not in fit.canonical_json()  # the default stays out of older fingerprints


@pytest.mark.parametrize("bad", [dict(background_removal="median"), dict(binarize="yes"), dict(binarize=1.5),
                                 dict(crop_to_ink=True, channels=3), dict(crop_margin=-0.1),
                                 dict(resize="scale"), dict(resize="scale", resize_scale=-1.0),
                                 dict(resize="fit", resize_scale=0.5)])
def test_bad_ink_settings_are_refused(bad):
    with pytest.raises(ValueError):
        Preprocess(**bad)


def test_shortcut_statistics_flag_the_paper_and_not_after_preprocessing():
    genuine = [scribble(s, background=241) for s in range(12)]
    forged = [scribble(100 + s, background=255) for s in range(12)]
    images = genuine + forged
    mask = np.array([False] * 12 + [True] * 12)
    stored = shortcut_statistics([raw_statistics(Preprocess.gray(Preprocess().decode(i))) for i in images], mask)
    assert "background_level" in stored["flagged"] and stored["background_level"]["auc"] == 1.0
    seen = shortcut_statistics([input_statistics(SIGNATURE.to_unit(i)) for i in images], mask)
    assert "background_level" not in seen and seen["mean"]["auc"] < SHORTCUT_AUC


def test_an_image_decoded_once_preprocesses_the_same():
    data = png_bytes(Image.fromarray(scribble(4, background=236)))
    assert np.array_equal(SIGNATURE.to_unit(SIGNATURE.decode(data)), SIGNATURE.to_unit(data))
    rgb = png_bytes(Image.new("RGB", (20, 10), (200, 30, 90)))
    plain = Preprocess(width=8, height=8, channels=3)
    assert np.array_equal(plain.to_unit(plain.decode(rgb)), plain.to_unit(rgb))


def test_train_refuses_scale_mode_without_its_factor(tmp_path, capsys):
    import argparse

    from twinsearch.encoder.commands import train as train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path / "writers"), "--size", "24", "48", "--resize", "scale",
                              "--out", str(tmp_path / "m.tsm"), "--no-progress"])
    assert train_cmd.run(args) == 2
    assert "--resize-scale" in capsys.readouterr().err
    assert not (tmp_path / "m.tsm").exists()
