"""Shared fixtures: tiny generated image sets and the Omniglot zips in the repository."""

from __future__ import annotations

import io
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
