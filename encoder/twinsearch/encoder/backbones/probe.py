"""The size of a fixed convolutional tower's output, found by running it once on zeros."""

from __future__ import annotations

import torch
from torch import nn


def feature_count(features: nn.Module, in_channels: int, height: int, width: int | None, name: str,
                  designed_for: str) -> int:
    """Features `features` gives for one (in_channels, height, width or height) input. Raises ValueError,
    naming the backbone and the size it was designed for, when the input is too small for its kernels
    and pools."""
    width = width or height
    training = features.training
    features.eval()  # running statistics are read, not updated by the zeros
    with torch.no_grad():
        try:
            n = features(torch.zeros(1, in_channels, height, width)).numel()
        except RuntimeError:
            n = 0
    features.train(training)
    if n == 0:
        raise ValueError(f"an input of {height} x {width} pixels is too small for the {name} backbone "
                         f"(designed for {designed_for}): give a larger --size, or another --backbone")
    return n
