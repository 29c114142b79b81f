"""A stack of conv blocks (conv 3x3, BatchNorm, ReLU, max-pool 2): the few-shot "Conv-4" shape.

Good for 28-105 px grayscale characters and clothing. `convs_per_block` > 1 stacks more 3x3 convs before
each pool (the VGG pattern): more depth at the same resolution, which is where small clothing images
gain most for their compute. Input (N, C, H, W) float32; output (N, F)
features, flattened (keeps the spatial layout, which matters for characters and signatures) or
average-pooled. Inputs need not be square: `input_width` (default `input_size`) sets the width that the
flattened size is computed from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Conv4(nn.Module):
    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (64, 64, 64, 64), pool: str = "flatten",
                 input_size: int = 28, dropout: float = 0.0, convs_per_block: int | Sequence[int] = 1,
                 input_width: int | None = None):
        super().__init__()
        if pool not in ("flatten", "avg"):
            raise ValueError(f"pool must be 'flatten' or 'avg', got {pool!r}")
        convs = [convs_per_block] * len(widths) if isinstance(convs_per_block, int) else list(convs_per_block)
        if len(convs) != len(widths) or min(convs, default=1) < 1:
            raise ValueError(f"convs_per_block must be a positive int or one per block ({len(widths)}), "
                             f"got {convs_per_block!r}")
        layers: list[nn.Module] = []
        c = in_channels
        for w, n in zip(widths, convs, strict=True):
            for _ in range(n):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = pool
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        height, width = input_size, input_width or input_size
        for _ in widths:
            height, width = height // 2, width // 2
        if min(height, width) < 1:
            raise ValueError(f"input size {input_size}x{input_width or input_size} is too small for "
                             f"{len(widths)} pooling blocks")
        self.out_features = c * height * width if pool == "flatten" else c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1) if self.pool == "flatten" else x.mean(dim=(2, 3))
        return self.dropout(x)
