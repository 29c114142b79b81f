"""Preprocessing: one object, shared by training and serving, saved inside the model file.

`Preprocess.load(image)` turns bytes (any format Pillow opens), a PIL image, or a numpy array into a
(C, H, W) float32 array ready for the network:

1. decode (bytes) with Pillow, refusing empty, truncated or corrupt files, and images over the pixel
   limit before their pixels are decoded (decompression bombs);
2. apply the EXIF orientation;
3. convert the mode predictably: palette -> RGB(A); alpha composited over the background colour
   (white by default); 16-bit and 32-bit integer images scaled by 1/65535; CMYK/YCbCr/LAB -> RGB;
   1-bit -> 8-bit; then to grayscale (ITU-R 601-2 luma) or RGB as `channels` asks;
4. for ink on paper (signatures, handwriting; grayscale only), optionally: remove the background
   (`background_removal="otsu"`: every pixel lighter than the image's Otsu threshold becomes white and the
   ink keeps its grey levels, SigNet's way, so the paper's grey level or texture says nothing), binarise
   (`binarize="otsu"` or a fixed grey level in [0, 1]: ink black, paper white, so neither does the ink's
   darkness), and crop to the ink (`crop_to_ink`: the bounding box of the ink, then centred by "fit");
5. resize: "stretch" to width x height, "fit" (keep the aspect ratio, pad with the background), or
   "scale" (every image by the same factor `resize_scale`, centred and padded as by "fit", so that sizes
   compare across images: a signature written larger stays larger; an image too large for the input at
   that factor is fitted instead);
6. scale to [0, 1], optionally invert the polarity (ink on white -> ink as 1.0 on 0.0), then
   normalise with (x - mean) / std per channel.

Ink is dark on a light background for step 4 (before `invert`); the ink threshold is the Otsu threshold
of the image's 256-level histogram, or the fixed `binarize` level.

Training uses `to_unit` (steps 1-4 and polarity: values in [0, 1], background 0 when inverted) so
that augmentation can run before `normalize`; `load` is `normalize(to_unit(...))`.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError, ImageFormatError, ImageTooLargeError

ImageInput = bytes | bytearray | memoryview | Image.Image | np.ndarray

# Default upper bound on the pixels of an input image (width * height), before any resize.
DEFAULT_MAX_PIXELS = 40_000_000

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX,
             "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """Input specification of a model and the function that produces it.

    `channels`: 1 (grayscale) or 3 (RGB). `resize`: "stretch", "fit" or "scale" (by the fixed factor
    `resize_scale`, output pixels per input pixel; see the module docstring). `invert`: map v -> 1 - v after
    scaling to [0, 1] (use for dark ink on a light page, so that ink is high and the background 0).
    `mean`/`std`: per-channel normalisation after inversion (length 1 or `channels`).
    `background`: the [0, 1] grey level used under transparent pixels and as padding in "fit" mode,
    before inversion. `max_pixels`: refuse larger inputs (width * height).
    Ink on paper (grayscale only): `background_removal` "none" or "otsu"; `binarize` "none", "otsu" or a
    grey level in (0, 1) (pixels at or below it are ink); `crop_to_ink` crops to the ink's bounding box
    (plus `crop_margin`, a fraction of the box's longer side) before resizing. See the module docstring.
    """

    width: int = 56
    height: int = 56
    channels: int = 1
    resize: str = "stretch"
    resample: str = "bilinear"
    invert: bool = False
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    background: float = 1.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    background_removal: str = "none"
    binarize: str | float = "none"
    crop_to_ink: bool = False
    crop_margin: float = 0.02
    resize_scale: float = 0.0
    # Free-form note (e.g. "Omniglot: 105x105 ink on white") kept in the model card.
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"input size must be positive, got {self.width}x{self.height}")
        if self.resize not in ("stretch", "fit", "scale"):
            raise ValueError(f"resize must be 'stretch', 'fit' or 'scale', got {self.resize!r}")
        if (self.resize == "scale") != (self.resize_scale > 0):
            raise ValueError("resize 'scale' takes a positive resize_scale (output pixels per input pixel), "
                             f"and only it does; got resize={self.resize!r}, resize_scale={self.resize_scale}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {self.resample!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                per_channel = "" if self.channels == 1 else f", or one per channel ({self.channels})"
                raise ValueError(f"{name} takes one value{per_channel}; got {len(values)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if self.background_removal not in ("none", "otsu"):
            raise ValueError(f"background_removal must be 'none' or 'otsu', got {self.background_removal!r}")
        if not (self.binarize in ("none", "otsu") or (isinstance(self.binarize, int | float)
                                                      and not isinstance(self.binarize, bool)
                                                      and 0.0 < self.binarize < 1.0)):
            raise ValueError(f"binarize must be 'none', 'otsu' or a grey level in (0, 1), got {self.binarize!r}")
        if isinstance(self.binarize, int | float):
            object.__setattr__(self, "binarize", float(self.binarize))
        if not 0.0 <= self.crop_margin <= 1.0:
            raise ValueError(f"crop_margin must be in [0, 1], got {self.crop_margin}")
        if self.ink_steps and self.channels != 1:
            raise ValueError("background removal, binarisation and cropping to the ink need channels=1")

    # ------------------------------------------------------------------ public
    @property
    def ink_steps(self) -> bool:
        """Whether any ink-on-paper step (background removal, binarisation, crop) is on."""
        return self.background_removal != "none" or self.binarize != "none" or self.crop_to_ink

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        return (self.channels, self.height, self.width)

    def load(self, image: ImageInput, max_pixels: int | None = None) -> np.ndarray:
        """Decode, convert, resize and normalise one image: (C, H, W) float32, C-contiguous.

        Raises ImageDecodeError, ImageTooLargeError or ImageFormatError (all ImageError, a ValueError).
        `max_pixels` overrides the object's limit for this call.
        """
        return self.normalize(self.to_unit(image, max_pixels=max_pixels))

    def to_unit(self, image: ImageInput, max_pixels: int | None = None) -> np.ndarray:
        """Like `load` but without normalisation: (C, H, W) float32 in [0, 1], polarity applied."""
        arr = self._decode(image, max_pixels)
        if self.ink_steps:  # grayscale first: the ink steps threshold grey levels
            out = self._resize(self._clean_ink(self._to_channels(arr)[:, :, 0]))[:, :, None]
        else:
            out = self._resize(arr)
            out = self._to_channels(out)
        if self.invert:
            out = 1.0 - out
        return np.ascontiguousarray(np.transpose(out, (2, 0, 1)), dtype=np.float32)

    def decode(self, image: ImageInput, max_pixels: int | None = None) -> np.ndarray:
        """Steps 1-3 only: (H, W) or (H, W, 3) float32 in [0, 1] at the image's own size. `to_unit` takes
        the result as it is (a float array in [0, 1]), so an image can be decoded once for several uses."""
        return self._decode(image, max_pixels)

    @staticmethod
    def gray(decoded: np.ndarray) -> np.ndarray:
        """A decoded image as grayscale (H, W) (ITU-R 601-2 luma for colour)."""
        return decoded if decoded.ndim == 2 else decoded @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def _decode(self, image: ImageInput, max_pixels: int | None) -> np.ndarray:
        """Steps 1-3: HxW or HxWx3 float32 in [0, 1] at the image's own size."""
        limit = self.max_pixels if max_pixels is None else int(max_pixels)
        if isinstance(image, np.ndarray):
            arr = _array_to_unit(image, limit, self.background)
            img = None
        elif isinstance(image, Image.Image):
            _check_pixels(image.size, limit)
            img = image
            arr = None
        elif isinstance(image, bytes | bytearray | memoryview):
            img = _decode(bytes(image), limit)
            arr = None
        else:
            raise ImageFormatError(
                f"unsupported image input type {type(image).__name__}: give bytes, a PIL image or a numpy array")
        if img is not None:
            if img.width == 0 or img.height == 0:
                raise ImageFormatError(f"image has zero size ({img.width}x{img.height})")
            arr = _pil_to_unit(img, self.background)
        return arr

    def normalize(self, unit: np.ndarray) -> np.ndarray:
        """(C, H, W) or (N, C, H, W) array in [0, 1] -> (x - mean) / std, float32."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((unit - mean) / std, dtype=np.float32)

    @property
    def fill_value(self) -> tuple[float, ...]:
        """Normalised value of the background per channel (padding for augmentation)."""
        bg = 1.0 - self.background if self.invert else self.background
        means = self.mean * self.channels if len(self.mean) == 1 else self.mean
        stds = self.std * self.channels if len(self.std) == 1 else self.std
        return tuple((bg - m) / s for m, s in zip(means, stds, strict=True))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}")
        return cls(**{k: (tuple(v) if k in ("mean", "std") else v) for k, v in data.items()})

    def canonical_json(self) -> str:
        """Stable JSON text of the fields that change the output (used in fingerprints). Fields added
        after the first model files were written are left out while at their defaults, so those files
        keep their fingerprints."""
        d = self.to_dict()
        d.pop("note", None)
        d.pop("max_pixels", None)
        for name, default in _LATER_FIELDS.items():
            if d.get(name) == default:
                d.pop(name, None)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    # ------------------------------------------------------------------ steps
    def _clean_ink(self, gray: np.ndarray) -> np.ndarray:
        """HxW float [0, 1], dark ink on light paper -> the same after background removal, binarisation
        and cropping (each when asked). A blank page (no ink below the threshold) is returned whole."""
        threshold = otsu_threshold(gray)
        if self.binarize != "none":
            level = threshold if self.binarize == "otsu" else float(self.binarize)
            ink = gray <= level
            gray = np.where(ink, 0.0, 1.0).astype(np.float32)
        else:
            ink = gray <= threshold
            if self.background_removal == "otsu":
                gray = np.where(ink, gray, 1.0).astype(np.float32)
        if self.crop_to_ink and ink.any():
            rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
            top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            pad = int(round(self.crop_margin * max(bottom - top, right - left)))
            h, w = gray.shape
            gray = gray[max(0, top - pad):min(h, bottom + pad), max(0, left - pad):min(w, right + pad)]
        return gray

    def _resize(self, arr: np.ndarray) -> np.ndarray:
        """HxW or HxWx3 float [0,1] -> (height, width[, 3]) float32."""
        h, w = arr.shape[:2]
        if (w, h) == (self.width, self.height):
            return arr.astype(np.float32, copy=False)
        resample = _RESAMPLE[self.resample]
        if self.resize == "stretch":
            return _resize_float(arr, self.width, self.height, resample)
        scale = min(self.width / w, self.height / h)
        if self.resize == "scale":
            scale = min(scale, self.resize_scale)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        small = _resize_float(arr, nw, nh, resample)
        shape = (self.height, self.width) + arr.shape[2:]
        out = np.full(shape, self.background, dtype=np.float32)
        top, left = (self.height - nh) // 2, (self.width - nw) // 2
        out[top:top + nh, left:left + nw] = small
        return out

    def _to_channels(self, arr: np.ndarray) -> np.ndarray:
        if arr.ndim == 2:
            gray = arr[:, :, None]
            return gray if self.channels == 1 else np.repeat(gray, 3, axis=2)
        if self.channels == 3:
            return arr
        # ITU-R 601-2 luma, as Pillow's convert("L").
        return (arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]


# Fields added after the first model files; left out of fingerprints while at these defaults.
_LATER_FIELDS = {"background_removal": "none", "binarize": "none", "crop_to_ink": False, "crop_margin": 0.02,
                 "resize_scale": 0.0}


# ---------------------------------------------------------------------- helpers
def otsu_threshold(gray: np.ndarray) -> float:
    """Otsu's threshold (1979) of a grayscale image in [0, 1]: the grey level that maximises the
    between-class variance of its 256-bin histogram; pixels <= it are the dark class (it lies half a bin
    above the last dark bin). A uniform image gives 0.5."""
    hist = np.bincount(np.clip(np.rint(gray * 255.0), 0, 255).astype(np.int64).ravel(), minlength=256)
    p = hist / hist.sum()
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    between = np.nan_to_num(between[:-1], nan=-1.0, posinf=-1.0)
    if between.max() <= 0:
        return 0.5
    return (float(np.argmax(between)) + 0.5) / 255.0


def _check_pixels(size: tuple[int, int], limit: int) -> None:
    w, h = size
    if w * h > limit:
        raise ImageTooLargeError(f"image is {w}x{h} = {w * h} pixels, over the limit of {limit} pixels")


def _decode(data: bytes, limit: int) -> Image.Image:
    if not data:
        raise ImageDecodeError("image data is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_pixels(img.size, limit)  # from the header, before decoding the pixels
            img.load()
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"cannot identify the image format ({len(data)} bytes)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"image is truncated or corrupt: {exc}") from exc
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not make a readable image unusable
        pass
    return img


def _pil_to_unit(img: Image.Image, background: float) -> np.ndarray:
    """Any PIL mode -> HxW or HxWx3 float32 in [0, 1], alpha composited over `background`."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode == "1":
        return np.asarray(img, dtype=np.float32)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float32)
        return np.clip(arr / 65535.0, 0.0, 1.0)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return np.clip(np.nan_to_num(arr), 0.0, 1.0)
    if mode == "L":
        return _bytes_to_unit(img)
    if mode in ("LA", "La", "PA"):
        arr = _bytes_to_unit(img.convert("LA"))
        return _composite(arr[:, :, 0], arr[:, :, 1], background)
    if mode in ("RGBA", "RGBa"):
        arr = _bytes_to_unit(img if mode == "RGBA" else img.convert("RGBA"))
        return _composite(arr[:, :, :3], arr[:, :, 3:4], background)
    # RGB, CMYK, YCbCr, LAB, HSV, RGBX ...
    return _bytes_to_unit(img if mode == "RGB" else img.convert("RGB"))


def _bytes_to_unit(img: Image.Image) -> np.ndarray:
    """An 8-bit PIL image -> float32 values / 255, in one pass over the pixels: the same bits as converting
    to float32 and then dividing, without the full-size intermediate (a 12-megapixel photograph's
    preprocessing takes a fifth less time)."""
    return np.divide(np.asarray(img), np.float32(255.0), dtype=np.float32)


def _composite(color: np.ndarray, alpha: np.ndarray, background: float) -> np.ndarray:
    return (color * alpha + background * (1.0 - alpha)).astype(np.float32)


def _array_to_unit(arr: np.ndarray, limit: int, background: float) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageFormatError(f"array image must be HxW or HxWxC with C in (1, 3, 4), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageFormatError(f"array image has zero size (shape {arr.shape})")
    _check_pixels((arr.shape[1], arr.shape[0]), limit)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.bool_:
        out = arr.astype(np.float32)
    elif arr.dtype in (np.float32, np.float64):
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise ImageFormatError("float array image contains NaN or infinity")
        if out.min() < 0.0 or out.max() > 1.0:
            raise ImageFormatError(
                f"float array image must be in [0, 1], got values in [{out.min():.3g}, {out.max():.3g}]")
    else:
        raise ImageFormatError(f"unsupported array dtype {arr.dtype}: use uint8, uint16 or float32 in [0, 1]")
    if out.ndim == 3 and out.shape[2] == 4:
        out = _composite(out[:, :, :3], out[:, :, 3:4], background)
    return out


def _resize_float(arr: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
    """Resize HxW or HxWx3 float32 with Pillow's "F" mode, channel by channel (no 8-bit rounding)."""
    if arr.ndim == 2:
        out = np.asarray(Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32)).resize((width, height), resample))
        return np.clip(out, 0.0, 1.0)
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[:, :, c], dtype=np.float32))
                        .resize((width, height), resample)) for c in range(arr.shape[2])]
    return np.clip(np.stack(chans, axis=2), 0.0, 1.0)
