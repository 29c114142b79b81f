"""Base class of the losses: `forward(embeddings, labels)` checks its inputs, then calls `compute_loss`.

Embeddings are (B, D) float32 L2-normalised rows; labels (B,) int64 class indices. Distances are
Euclidean (in [0, 2], smaller = more alike). Every loss returns a scalar tensor.
"""

from __future__ import annotations

import torch
from torch import nn


def pairwise_distances(x: torch.Tensor, y: torch.Tensor | None = None, squared: bool = False) -> torch.Tensor:
    """(B, D), (M, D) -> (B, M) Euclidean distances (squared if asked), clamped at 0 before the root."""
    y = x if y is None else y
    d2 = (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)
    if squared:
        return d2
    # The epsilon keeps the gradient of sqrt finite on the diagonal.
    return torch.sqrt(d2 + 1e-12)


class BaseMetricLoss(nn.Module):
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
        if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(f"labels must be (B,) matching embeddings, got {tuple(labels.shape)}")
        return self.compute_loss(embeddings, labels.to(embeddings.device))

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
