from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from twinsearch.encoder.errors import ImageDecodeError, ImageError, ImageFormatError, ImageTooLargeError
from twinsearch.encoder.preprocess import Preprocess

from .conftest import png_bytes


def test_png_bytes_to_normalised_chw():
    pre = Preprocess(width=20, height=10, channels=1, invert=True, mean=(0.5,), std=(0.5,))
    img = Image.new("L", (40, 20), 255)
    img.paste(0, (0, 0, 20, 20))  # left half black ink
    out = pre.load(png_bytes(img))
    assert out.shape == (1, 10, 20) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    # inverted: ink (black) -> 1.0 -> (1 - 0.5) / 0.5 = 1; paper -> -1
    assert out[0, 5, 2] == pytest.approx(1.0) and out[0, 5, 17] == pytest.approx(-1.0)


def test_modes_convert_predictably():
    pre = Preprocess(width=8, height=8, channels=1)
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    assert pre.to_unit(red)[0, 0, 0] == pytest.approx(0.299, abs=1e-3)
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent -> white background
    assert pre.to_unit(png_bytes(rgba)).min() == pytest.approx(1.0)
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 255] + [0] * 765)
    assert pre.to_unit(png_bytes(pal))[0, 0, 0] == pytest.approx(0.114, abs=1e-3)
    deep = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    assert pre.to_unit(png_bytes(deep)).min() == pytest.approx(1.0)
    cmyk = Image.new("CMYK", (8, 8), (0, 0, 0, 0))  # no ink -> white
    assert pre.to_unit(png_bytes(cmyk, "JPEG")).mean() > 0.95
    rgb = Preprocess(width=8, height=8, channels=3).load(Image.new("L", (8, 8), 128))
    assert rgb.shape == (3, 8, 8) and np.allclose(rgb, 128 / 255)


def test_8_bit_levels_become_exact_fractions():
    """Every 8-bit level k becomes float32(k) / float32(255), the value the models were trained on, in
    every mode that goes through 8 bits (a multiplication by 1 / 255 would differ in the last bit)."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)

    def want(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float32) / np.float32(255.0)

    decode = Preprocess(width=16, height=16, channels=3).decode
    assert np.array_equal(decode(png_bytes(Image.fromarray(levels, "L"))), want(levels))
    channels = np.stack([levels, levels.T, 255 - levels], axis=2)
    rgb = decode(png_bytes(Image.fromarray(channels, "RGB")))
    assert rgb.dtype == np.float32 and np.array_equal(rgb, want(channels))
    opaque = np.dstack([channels, np.full_like(levels, 255)])
    assert np.array_equal(decode(png_bytes(Image.fromarray(opaque, "RGBA"))), want(channels))


def test_exif_orientation_applied():
    img = Image.new("L", (20, 10), 255)
    img.paste(0, (0, 0, 10, 10))  # black on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = png_bytes(img, "JPEG", exif=exif.tobytes(), quality=95)
    out = Preprocess(width=10, height=20, channels=1).to_unit(data)
    assert out.shape == (1, 20, 10)
    # after the 90 degree turn the black half is on top
    assert out[0, :8].mean() < 0.2 and out[0, 12:].mean() > 0.8


def test_fit_pads_with_background_and_stretch_fills():
    wide = Image.new("L", (40, 10), 0)
    fit = Preprocess(width=20, height=20, resize="fit").to_unit(wide)
    assert fit[0, 0].mean() == pytest.approx(1.0) and fit[0, 10].mean() == pytest.approx(0.0)
    stretch = Preprocess(width=20, height=20, resize="stretch").to_unit(wide)
    assert stretch.max() == pytest.approx(0.0)


def test_arrays_accepted():
    pre = Preprocess(width=4, height=4)
    a8 = pre.to_unit(np.full((4, 4), 255, np.uint8))
    a16 = pre.to_unit(np.full((4, 4, 1), 65535, np.uint16))
    af = pre.to_unit(np.ones((4, 4, 3), np.float32))
    assert np.allclose(a8, 1) and np.allclose(a16, 1) and np.allclose(af, 1)


@pytest.mark.parametrize("bad,kind", [
    (b"", ImageDecodeError),
    (b"definitely not an image", ImageDecodeError),
    (np.zeros((0, 5), np.uint8), ImageFormatError),
    (np.zeros((4, 4, 2), np.uint8), ImageFormatError),
    (np.zeros((4, 4), np.int64), ImageFormatError),
    (np.full((4, 4), 2.0, np.float32), ImageFormatError),
    (np.full((4, 4), np.nan, np.float32), ImageFormatError),
    ("a string", ImageFormatError),
])
def test_refuses_bad_inputs(bad, kind):
    with pytest.raises(kind) as info:
        Preprocess(width=4, height=4).load(bad)
    assert isinstance(info.value, ImageError) and isinstance(info.value, ValueError)
    assert str(info.value)


def test_truncated_png_is_a_decode_error():
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
        Preprocess(width=8, height=8).load(data[: len(data) // 2])


def _bomb_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of width x height white pixels: a few kB that decode to many megapixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    raw = zlib.compress(row * height, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_pixel_limit_and_decompression_bomb():
    bomb = _bomb_png(20000, 20000)  # 400 Mpx
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLargeError, match="pixels"):
        Preprocess(width=8, height=8).load(bomb)
    small = png_bytes(Image.new("L", (100, 100)))
    with pytest.raises(ImageTooLargeError):
        Preprocess(width=8, height=8).load(small, max_pixels=5000)
    with pytest.raises(ImageTooLargeError):
        Preprocess(width=8, height=8, max_pixels=5000).load(np.zeros((100, 100), np.uint8))


def test_round_trip_and_fill_value():
    pre = Preprocess(width=28, height=28, invert=True, mean=(0.1,), std=(0.3,), note="x")
    again = Preprocess.from_dict(pre.to_dict())
    assert again == pre and again.canonical_json() == pre.canonical_json()
    assert pre.fill_value == pytest.approx(((0.0 - 0.1) / 0.3,))
    with pytest.raises(ValueError):
        Preprocess.from_dict({**pre.to_dict(), "bogus": 1})
    img = Image.new("L", (30, 30), 200)
    assert np.allclose(pre.load(img), pre.normalize(pre.to_unit(io.BytesIO(png_bytes(img)).getvalue())))
