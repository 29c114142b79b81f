"""Embedding heads and the full embedding network.

`EmbeddingNet(backbone, head)` maps (N, C, H, W) float32 to (N, dim) float32 L2-normalised rows, so
Euclidean distances between embeddings lie in [0, 2] (smaller = more alike) and d^2 = 2 - 2 cos.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """Features (N, F) -> optional dropout -> Linear(F, dim) -> optional BatchNorm1d -> L2 normalise."""

    def __init__(self, in_features: int, dim: int = 128, dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(in_features, dim)
        self.bn = nn.BatchNorm1d(dim) if batchnorm else nn.Identity()
        self.dim = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.bn(self.linear(self.dropout(features))), dim=1)


class EmbeddingNet(nn.Module):
    """backbone -> head. With `tta_shifts` (pixel offsets (dy, dx)), evaluation embeds the input and each
    shifted copy (zero-filled; use with a zero background) and returns the normalised mean: one embedding
    per image, a little steadier against small misplacements. With `tta_flip`, the left-right mirror of
    every view is embedded too (for data whose classes are mirror-symmetric: clothing, faces; not
    characters). Training ignores both."""

    def __init__(self, backbone: nn.Module, head: EmbeddingHead, tta_shifts: list | None = None,
                 tta_flip: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tta_shifts = [tuple(int(v) for v in s) for s in (tta_shifts or [])]
        self.tta_flip = bool(tta_flip)

    @property
    def dim(self) -> int:
        return self.head.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not (self.tta_shifts or self.tta_flip):
            return self.head(self.backbone(x))
        views = [x] + [_shift(x, dy, dx) for dy, dx in self.tta_shifts]
        if self.tta_flip:
            views += [v.flip(3) for v in views]
        n = x.shape[0]
        emb = self.head(self.backbone(torch.cat(views)))
        return F.normalize(emb.view(len(views), n, -1).mean(0), dim=1)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate (N, C, H, W) by (dy, dx) pixels, filling with zeros."""
    h, w = x.shape[2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, :, top:top + h, left:left + w]


def build_net(architecture: dict) -> EmbeddingNet:
    """Build from a card's architecture: {"backbone": name, "backbone_args": {...}, "dim": int,
    "head_args": {...}, optional "tta_shifts": [[dy, dx], ...], optional "tta_flip": bool}."""
    from .backbones import build_backbone

    backbone = build_backbone(architecture["backbone"], **architecture.get("backbone_args", {}))
    head = EmbeddingHead(backbone.out_features, architecture["dim"], **architecture.get("head_args", {}))
    return EmbeddingNet(backbone, head, architecture.get("tta_shifts"), architecture.get("tta_flip", False))
