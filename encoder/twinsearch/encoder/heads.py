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
    def __init__(self, backbone: nn.Module, head: EmbeddingHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def dim(self) -> int:
        return self.head.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_net(architecture: dict) -> EmbeddingNet:
    """Build from a card's architecture: {"backbone": name, "backbone_args": {...}, "dim": int,
    "head_args": {...}}."""
    from .backbones import build_backbone

    backbone = build_backbone(architecture["backbone"], **architecture.get("backbone_args", {}))
    head = EmbeddingHead(backbone.out_features, architecture["dim"], **architecture.get("head_args", {}))
    return EmbeddingNet(backbone, head)
