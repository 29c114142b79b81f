"""Contrastive loss (Hadsell, Chopra and LeCun 2006) on L2-normalised embeddings.

For a pair at distance d with y = 1 when same-class: y * max(0, d - pos_margin)^2
+ (1 - y) * max(0, margin - d)^2. Over all pairs of the batch (in-batch), averaged separately over
positive and negative pairs that contribute, then summed. With the classic pair sampler, a batch laid out
as [a_1..a_n, b_1..b_n] can be scored on its n given pairs only (`pairs="given"`).
"""

from __future__ import annotations

import torch

from .base import BaseMetricLoss, pairwise_distances


class ContrastiveLoss(BaseMetricLoss):
    def __init__(self, margin: float = 1.0, pos_margin: float = 0.0, pairs: str = "all"):
        super().__init__()
        if pairs not in ("all", "given"):
            raise ValueError(f"pairs must be 'all' or 'given', got {pairs!r}")
        self.margin = margin
        self.pos_margin = pos_margin
        self.pairs = pairs

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.pairs == "given":
            n = embeddings.shape[0] // 2
            a, b = embeddings[:n], embeddings[n:2 * n]
            d = (a - b).pow(2).sum(1).add(1e-12).sqrt()
            same = labels[:n] == labels[n:2 * n]
            pos = (d - self.pos_margin).clamp_min(0).pow(2)
            neg = (self.margin - d).clamp_min(0).pow(2)
            return torch.where(same, pos, neg).mean()
        d = pairwise_distances(embeddings)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos_mask, neg_mask = same & ~eye, ~same
        pos = (d - self.pos_margin).clamp_min(0).pow(2)[pos_mask]
        neg = (self.margin - d).clamp_min(0).pow(2)[neg_mask]
        loss = embeddings.new_zeros(())
        if pos.numel():
            loss = loss + pos.sum() / pos.gt(0).sum().clamp_min(1)
        if neg.numel():
            loss = loss + neg.sum() / neg.gt(0).sum().clamp_min(1)
        return loss
