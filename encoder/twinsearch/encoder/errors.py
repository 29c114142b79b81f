"""Errors raised by the encoder package.

The server maps `ImageError` subclasses to INVALID_ARGUMENT (and `ImageTooLargeError` to
RESOURCE_EXHAUSTED if it wants to), and `ModelFileError` to a start-up failure.
"""

from __future__ import annotations


class ImageError(ValueError):
    """An input image cannot be turned into a network input."""


class ImageDecodeError(ImageError):
    """The bytes are empty, truncated, corrupt, or in a format Pillow cannot open."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the limit (this includes decompression bombs)."""


class ImageFormatError(ImageError):
    """A raw array has an unsupported shape or dtype, or the image has zero size."""


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or incompatible with this version of the encoder."""


class DataError(ValueError):
    """A training or evaluation data set cannot be read or split as asked."""
