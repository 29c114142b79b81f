"""Embedding heads and the full embedding network.

`EmbeddingNet(backbone, head)` maps (N, C, H, W) float32 to (N, dim) float32 L2-normalised rows, so
Euclidean distances between embeddings lie in [0, 2] (smaller = more alike) and d^2 = 2 - 2 cos.

With a class posterior (`ClassPosterior`, for closed-set data: the classes served are the classes trained
on), each row also carries the square root of the model's belief over the training classes, so the
distance mixes "looks alike" with "is believed to be the same class".
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


class ClassPosterior(nn.Module):
    """Appends sqrt(p) to an embedding f, where p = softmax(temperature * cos(f, proxy_c)) over the training
    classes' proxies (the normalised-softmax loss learns them).

    The output is [sqrt(1 - weight) * f, sqrt(weight) * sqrt(p)], a unit vector again (|f| = 1, sum p = 1),
    so squared distances split into (1 - weight) * |f_a - f_b|^2 + weight * 2 * (1 - BC(p_a, p_b)), where
    BC = sum_c sqrt(p_a,c * p_b,c) is the Bhattacharyya coefficient: 1 when two images get the same belief,
    0 when their beliefs do not overlap. Two images of a class the classifier knows well end up close even
    when they look different (a plain and a patterned shirt); two images of an unseen class get a belief
    spread over look-alike training classes, so for open-set use (enrolling classes never trained on) keep
    `weight` at 0, that is, no posterior at all.
    """

    def __init__(self, num_classes: int, dim: int, weight: float, temperature: float):
        super().__init__()
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"posterior weight must be in (0, 1], got {weight}")
        if not temperature > 0:
            raise ValueError(f"posterior temperature must be positive, got {temperature}")
        self.register_buffer("proxies", torch.zeros(num_classes, dim))
        self.weight = float(weight)
        self.temperature = float(temperature)

    @property
    def num_classes(self) -> int:
        return self.proxies.shape[0]

    def cosines(self, f: torch.Tensor) -> torch.Tensor:
        """(N, classes) cosine of each unit embedding with each class proxy."""
        return f @ F.normalize(self.proxies, dim=1).T

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.temperature * self.cosines(f), dim=1)
        out = torch.cat([(1.0 - self.weight) ** 0.5 * f, self.weight ** 0.5 * p.sqrt()], dim=1)
        return F.normalize(out, dim=1)  # already unit length up to rounding


class EmbeddingNet(nn.Module):
    """backbone -> head. With `tta_shifts` (pixel offsets (dy, dx)), evaluation embeds the input and each
    shifted copy (zero-filled; use with a zero background) and returns the normalised mean: one embedding
    per image, a little steadier against small misplacements. With `tta_flip`, the left-right mirror of
    every view is embedded too (for data whose classes are mirror-symmetric: clothing, faces; not
    characters). Training ignores both, and the `posterior` (the loss is computed on the head's output)."""

    def __init__(self, backbone: nn.Module, head: EmbeddingHead, tta_shifts: list | None = None,
                 tta_flip: bool = False, posterior: ClassPosterior | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tta_shifts = [tuple(int(v) for v in s) for s in (tta_shifts or [])]
        self.tta_flip = bool(tta_flip)
        self.posterior = posterior

    @property
    def dim(self) -> int:
        return self.head.dim + (self.posterior.num_classes if self.posterior is not None else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.head(self.backbone(x))
        if self.tta_shifts or self.tta_flip:
            views = [x] + [_shift(x, dy, dx) for dy, dx in self.tta_shifts]
            if self.tta_flip:
                views += [v.flip(3) for v in views]
            emb = self.head(self.backbone(torch.cat(views)))
            emb = F.normalize(emb.view(len(views), x.shape[0], -1).mean(0), dim=1)
        else:
            emb = self.head(self.backbone(x))
        if self.posterior is not None:
            emb = self.posterior(emb.float())
        return emb


def shift_views(pixels: int) -> list[list[int]]:
    """The test-time views of `--tta PIXELS`: the image moved up, down, left and right by `pixels` (none
    for 0), as `EmbeddingNet`'s `tta_shifts`."""
    t = int(pixels)
    return [[t, 0], [-t, 0], [0, t], [0, -t]] if t else []


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate (N, C, H, W) by (dy, dx) pixels, filling with zeros."""
    h, w = x.shape[2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, :, top:top + h, left:left + w]


def build_net(architecture: dict) -> EmbeddingNet:
    """Build from a card's architecture: {"backbone": name, "backbone_args": {...}, "dim": int,
    "head_args": {...}, optional "tta_shifts": [[dy, dx], ...], optional "tta_flip": bool, optional
    "posterior": {"classes": int, "weight": float, "temperature": float}}. The proxies of a posterior are
    weights (zero here until loaded or set)."""
    from .backbones import build_backbone

    backbone = build_backbone(architecture["backbone"], **architecture.get("backbone_args", {}))
    head = EmbeddingHead(backbone.out_features, architecture["dim"], **architecture.get("head_args", {}))
    post = architecture.get("posterior")
    posterior = ClassPosterior(int(post["classes"]), head.dim, float(post["weight"]), float(post["temperature"])) \
        if post else None
    return EmbeddingNet(backbone, head, architecture.get("tta_shifts"), architecture.get("tta_flip", False),
                        posterior)
