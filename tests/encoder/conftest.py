"""Shared fixtures: tiny generated image sets and the Omniglot zips in the repository."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
OMNIGLOT_SMALL1 = REPO / "data" / "omniglot" / "images_background_small1.zip"
OMNIGLOT_SMALL2 = REPO / "data" / "omniglot" / "images_background_small2.zip"

torch.set_num_threads(2)


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def glyph(cls: int, variant: int, size: int = 32) -> np.ndarray:
    """A synthetic "character": class-specific strokes (dark on white), jittered per variant. uint8 HxW."""
    rng = np.random.default_rng(1000 * cls + variant)
    crng = np.random.default_rng(cls)
    img = np.full((size, size), 255, dtype=np.uint8)
    shift = rng.integers(-2, 3, size=2)
    for _ in range(3):
        r0, c0, r1, c1 = crng.integers(4, size - 4, size=4)
        n = 40
        rr = np.clip(np.linspace(r0, r1, n).astype(int) + shift[0], 0, size - 1)
        cc = np.clip(np.linspace(c0, c1, n).astype(int) + shift[1], 0, size - 1)
        img[rr, cc] = 0
        img[np.clip(rr + 1, 0, size - 1), cc] = 0
    return img


@pytest.fixture(scope="session")
def glyph_tree(tmp_path_factory) -> Path:
    """root/<group>/<class>/<n>.png: 2 groups x 6 classes x 6 images of 32x32 synthetic glyphs."""
    root = tmp_path_factory.mktemp("glyphs")
    for g in range(2):
        for c in range(6):
            folder = root / f"group{g}" / f"char{c:02d}"
            folder.mkdir(parents=True)
            for v in range(6):
                Image.fromarray(glyph(g * 6 + c, v)).save(folder / f"{v}.png")
    return root


def interrupt_training_at(monkeypatch, step: int) -> None:
    """Make training send this process a SIGINT after `step`, as a user's Ctrl-C in the middle of a run
    (undo with `monkeypatch.undo()` or by setting `Trainer.fit` back)."""
    from twinsearch.encoder.training.trainer import Trainer

    real = Trainer.fit

    def fit_and_interrupt(self, resume=False):
        callback = self.callback

        def on_event(event):
            callback(event)
            if event["kind"] == "step" and event["step"] == step:
                os.kill(os.getpid(), signal.SIGINT)
        self.callback = on_event
        return real(self, resume=resume)

    monkeypatch.setattr(Trainer, "fit", fit_and_interrupt)


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if the command gets as far as decoding images."""
    from twinsearch.encoder.training import recipe as recipe_module

    def refuse(*args, **kwargs):
        raise AssertionError("decoded images before refusing the settings")
    monkeypatch.setattr(recipe_module, "decode_parts", refuse)
    monkeypatch.setattr(recipe_module, "load_arrays", refuse)
