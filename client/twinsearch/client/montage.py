"""A PNG montage of identification results, like the classic Siamese pair montage.

Each tile shows a probe beside the enrolled exemplar of the class it was identified as (blank for
"unknown"), framed green when the answer was right and red when it was wrong, with the predicted
class and distance written under it. Pillow only, so the client stays light.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

GREEN = (30, 160, 60)
RED = (210, 40, 40)
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


@dataclass(frozen=True)
class Tile:
    """One probe: its image (encoded bytes), the exemplar of the predicted class (None for unknown),
    the caption and whether the answer was right."""

    probe: bytes
    exemplar: bytes | None
    caption: str
    right: bool


def _open(data: bytes, size: int) -> Image.Image:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def render(tiles: Sequence[Tile], *, columns: int = 6, size: int = 96, title: str = "") -> Image.Image:
    """The montage as a PIL image: `columns` tiles per row, each image `size` pixels square."""
    if not tiles:
        raise ValueError("no tiles to draw")
    pad, frame, caption_h = 6, 4, 30
    title_h = 28 if title else 0
    tile_w = 2 * size + 3 * pad + 2 * frame
    tile_h = size + 2 * pad + 2 * frame + caption_h
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile_w + pad, rows * tile_h + pad + title_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    small, large = _font(11), _font(15)
    if title:
        draw.text((pad, 6), title, fill=INK, font=large)
    for n, tile in enumerate(tiles):
        x0 = pad + (n % columns) * tile_w
        y0 = title_h + pad + (n // columns) * tile_h
        colour = GREEN if tile.right else RED
        box = (x0, y0, x0 + tile_w - pad, y0 + tile_h - pad)
        draw.rectangle(box, outline=colour, width=frame)
        inner_x, inner_y = x0 + frame + pad // 2, y0 + frame + pad // 2
        sheet.paste(_open(tile.probe, size), (inner_x, inner_y))
        if tile.exemplar is not None:
            sheet.paste(_open(tile.exemplar, size), (inner_x + size + pad, inner_y))
        else:
            draw.text((inner_x + size + pad + size // 4, inner_y + size // 2 - 6), "unknown", fill=colour, font=small)
        text_y = inner_y + size + 2
        for line in tile.caption.split("\n")[:2]:
            draw.text((inner_x, text_y), line[:40], fill=colour, font=small)
            text_y += 13
    return sheet


def write(path: str | Path, tiles: Sequence[Tile], **kwargs) -> Path:
    """Render and save as PNG (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render(tiles, **kwargs).save(path, format="PNG")
    return path
