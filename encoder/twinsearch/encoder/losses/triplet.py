"""Triplet margin loss with in-batch mining: max(0, d(a, p) - d(a, n) + margin).

Mining: "batch_hard" (Hermans et al. 2017: per anchor its farthest positive and closest negative),
"semi_hard" (FaceNet: per anchor-positive pair, the closest negative farther than the positive; the
hardest negative when none is), or "all" (mean over the triplets with a positive loss).
Batches should hold several images per class (the P x K sampler).
"""

from __future__ import annotations

import torch

from .base import BaseMetricLoss, pairwise_distances


class TripletLoss(BaseMetricLoss):
    def __init__(self, margin: float = 0.2, mining: str = "batch_hard"):
        super().__init__()
        if mining not in ("batch_hard", "semi_hard", "all"):
            raise ValueError(f"mining must be batch_hard, semi_hard or all, got {mining!r}")
        self.margin = margin
        self.mining = mining

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d = pairwise_distances(embeddings)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos_mask, neg_mask = same & ~eye, ~same
        valid = pos_mask.any(1) & neg_mask.any(1)
        if not valid.any():
            return embeddings.sum() * 0.0
        big = d.detach().max() + 1.0
        if self.mining == "batch_hard":
            hardest_pos = torch.where(pos_mask, d, torch.zeros_like(d)).max(1).values
            hardest_neg = torch.where(neg_mask, d, d + big).min(1).values
            return (hardest_pos - hardest_neg + self.margin).clamp_min(0)[valid].mean()
        # (anchor, positive, negative) cube: loss[a, p, n] = d[a, p] - d[a, n] + margin
        cube = d[:, :, None] - d[:, None, :] + self.margin
        mask = pos_mask[:, :, None] & neg_mask[:, None, :]
        if self.mining == "all":
            vals = cube[mask].clamp_min(0)
            nonzero = vals.gt(0).sum()
            return vals.sum() / nonzero.clamp_min(1)
        # semi-hard: per (a, p), the smallest d(a, n) with d(a, n) > d(a, p); else the largest d(a, n) < d(a, p)
        dan = d[:, None, :].expand_as(cube)
        dap = d[:, :, None].expand_as(cube)
        semi = mask & (dan > dap)
        chosen_semi = torch.where(semi, dan, dan + big).min(2).values
        has_semi = semi.any(2)
        chosen_hard = torch.where(mask, dan, torch.zeros_like(dan)).max(2).values
        chosen = torch.where(has_semi, chosen_semi, chosen_hard)
        per_pair = (d - chosen + self.margin).clamp_min(0)[pos_mask & valid[:, None]]
        return per_pair.mean() if per_pair.numel() else embeddings.sum() * 0.0
