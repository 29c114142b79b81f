"""Prototypical loss (Snell et al. 2017) for episodic batches.

A batch holds `way` classes with `shot` support and some query images each, in any order. For each class
the first `shot` images (in batch order) are its support; their mean (re-normalised to the unit sphere)
is the prototype. Queries are classified by softmax over -scale * squared Euclidean distance to the
prototypes; the loss is the cross-entropy. `scale` is learnable when `learn_scale` is set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BaseMetricLoss, pairwise_distances


class PrototypicalLoss(BaseMetricLoss):
    def __init__(self, shot: int = 1, scale: float = 10.0, learn_scale: bool = True):
        super().__init__()
        self.shot = shot
        init = torch.tensor(float(scale)).log()
        self.log_scale = nn.Parameter(init) if learn_scale else nn.Parameter(init, requires_grad=False)

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes, inverse = torch.unique(labels, return_inverse=True)
        way = len(classes)
        # rank of each image within its class, in batch order
        order = torch.argsort(inverse, stable=True)
        counts = torch.bincount(inverse, minlength=way)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(inverse)
        rank[order] = torch.arange(len(inverse), device=labels.device) - starts[inverse[order]]
        support = rank < self.shot
        query = ~support
        if not query.any():
            raise ValueError("prototypical loss needs more than `shot` images per class")
        protos = torch.zeros(way, embeddings.shape[1], device=embeddings.device, dtype=embeddings.dtype)
        protos = protos.index_add(0, inverse[support], embeddings[support])
        protos = F.normalize(protos, dim=1)
        logits = -self.log_scale.exp() * pairwise_distances(embeddings[query], protos, squared=True)
        return F.cross_entropy(logits, inverse[query])
