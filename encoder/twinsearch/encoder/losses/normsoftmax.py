"""Normalised-softmax (proxy) loss: a cosine classifier over the training classes.

Each class has a learnable proxy on the unit sphere; logits are scale * (cos(e, proxy) - margin for the
true class) (CosFace margin; 0 gives NormFace, Wang et al. 2017; Zhai and Wu 2018 "Classification is a
strong baseline for deep metric learning"). Every image is compared with every class at each step, which
converges fast; the proxies are thrown away after training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BaseMetricLoss


class NormSoftmaxLoss(BaseMetricLoss):
    def __init__(self, num_classes: int, dim: int, scale: float = 16.0, margin: float = 0.1,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(num_classes, dim) / dim ** 0.5)
        self.scale = scale
        self.margin = margin
        self.label_smoothing = label_smoothing

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies, dim=1).T
        if self.margin:
            cos = cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return F.cross_entropy(self.scale * cos, labels, label_smoothing=self.label_smoothing)
