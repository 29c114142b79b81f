"""Embedding heads and the full embedding network.

`EmbeddingNet(backbone, head)` maps (N, C, H, W) float32 to (N, dim) float32 L2-normalised rows, so
Euclidean distances between embeddings lie in [0, 2] (smaller = more alike) and d^2 = 2 - 2 cos.

With a class posterior (`ClassPosterior`, for closed-set data: the classes served are the classes trained
on), each row also carries the square root of the model's belief over the training classes, so the
distance mixes "looks alike" with "is believed to be the same class".

With an orientation histogram (`OrientationHistogram`, for signatures), each row also carries a fixed,
untrained description of the image: how much of its ink's outline runs in each direction, in a few
regions. It takes a set share of the squared distance.
"""

from __future__ import annotations

import math

import numpy as np
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


class OrientationHistogram(nn.Module):
    """A fixed descriptor appended to an embedding f: the image's intensity gradients, their magnitudes
    summed by direction (`bins` unsigned directions over 180 degrees) in each of `cells` = (rows, columns)
    equal regions, the whole L2-normalised to h. No weights: the network's training never sees it.

    The output is [sqrt(1 - weight) * f, sqrt(weight) * h], a unit vector again, so squared distances
    split into (1 - weight) * |f_a - f_b|^2 + weight * |h_a - h_b|^2. For signatures it adds what a network
    trained on a few dozen writers does not learn: how the strokes slant in each part of the signature
    (measured on validation writers; see docs/signatures.md). The gradients are central differences of the mean over the input's channels,
    the image's border repeated. Bin k holds the directions from k * 180 / bins degrees to the next bin's
    start, every border moved back by half a degree: gradients along the axes and the diagonals, common
    in binarised images, then lie inside a bin, not on a border that rounding decides. Which bin is told
    by the signs of cross products with the borders (no angles computed), the same in every runtime.
    """

    SKEW = math.radians(0.5)  # the bins' borders, moved back from k * 180 / bins degrees
    CELLS, BINS = (1, 2), 8  # the defaults: left and right halves, 8 directions

    def __init__(self, weight: float, cells: tuple[int, int] = CELLS, bins: int = BINS):
        super().__init__()
        self.check(weight, cells, bins)
        self.weight, self.cells, self.bins = float(weight), (int(cells[0]), int(cells[1])), int(bins)
        edges = [(k + 1) * math.pi / self.bins - self.SKEW for k in range(self.bins)]  # bin k ends at edges[k]
        for name, values in (("edge_cos", [math.cos(a) for a in edges]), ("edge_sin", [math.sin(a) for a in edges]),
                             ("bin_index", range(self.bins))):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @staticmethod
    def check(weight: float, cells: tuple[int, int], bins: int) -> None:
        """ValueError unless 0 < weight < 1, cells are at least 1 x 1 and there are at least 2 bins."""
        if not 0.0 < weight < 1.0:
            raise ValueError(f"orientation histogram weight must be in (0, 1), got {weight}")
        if min(int(v) for v in cells) < 1 or int(bins) < 2:
            raise ValueError(f"orientation histogram needs at least 1 x 1 cells and 2 bins, got "
                             f"{' x '.join(map(str, cells))} and {bins}")

    @property
    def dim(self) -> int:
        return self.cells[0] * self.cells[1] * self.bins

    def histogram(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, dim) unit rows (zero rows for blank images)."""
        g = F.pad(x.float().mean(1, keepdim=True), (1, 1, 1, 1), mode="replicate")
        gx = (g[:, :, 1:-1, 2:] - g[:, :, 1:-1, :-2]) * 0.5
        gy = (g[:, :, 2:, 1:-1] - g[:, :, :-2, 1:-1]) * 0.5
        flip = torch.where(gy < 0, -1.0, 1.0)  # fold onto directions in [0, 180] degrees
        gx, gy = gx * flip, gy * flip
        passed = (self.edge_cos * gy - self.edge_sin * gx >= 0).float().sum(1, keepdim=True)  # edges passed
        bin_of = torch.remainder(passed, self.bins)  # past the last edge is back in bin 0
        votes = (bin_of == self.bin_index).float() * torch.sqrt(gx * gx + gy * gy)
        cells = F.adaptive_avg_pool2d(votes, self.cells)  # (N, bins, rows, cols)
        return F.normalize(cells.permute(0, 2, 3, 1).reshape(x.shape[0], -1), dim=1)

    def forward(self, f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([(1.0 - self.weight) ** 0.5 * f, self.weight ** 0.5 * self.histogram(x)], dim=1)
        return F.normalize(out, dim=1)  # unit already, but for a blank image (no gradients): then f alone


class EmbeddingNet(nn.Module):
    """backbone -> head. With `tta_shifts` (pixel offsets (dy, dx)), evaluation embeds the input and each
    shifted copy (zero-filled; use with a zero background) and returns the normalised mean: one embedding
    per image, a little steadier against small misplacements. With `tta_flip`, the left-right mirror of
    every view is embedded too (for data whose classes are mirror-symmetric: clothing, faces; not
    characters). Training ignores both, the `posterior` and the `orientations` (the loss is computed on the
    head's output)."""

    def __init__(self, backbone: nn.Module, head: EmbeddingHead, tta_shifts: list | None = None,
                 tta_flip: bool = False, posterior: ClassPosterior | None = None,
                 orientations: OrientationHistogram | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tta_shifts = [tuple(int(v) for v in s) for s in (tta_shifts or [])]
        self.tta_flip = bool(tta_flip)
        self.posterior = posterior
        self.orientations = orientations

    @property
    def dim(self) -> int:
        return (self.head.dim + (self.posterior.num_classes if self.posterior is not None else 0)
                + (self.orientations.dim if self.orientations is not None else 0))

    def learned_part(self, embeddings: np.ndarray) -> np.ndarray:
        """The columns of `embeddings` (this net's output) that training shapes, at their own scale: all of
        them, or without an orientation histogram's (whose spread would hide a collapsed embedding)."""
        if self.orientations is None:
            return embeddings
        return embeddings[:, :self.dim - self.orientations.dim] / (1.0 - self.orientations.weight) ** 0.5

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
        if self.orientations is not None:
            emb = self.orientations(emb.float(), x)
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
    "posterior": {"classes": int, "weight": float, "temperature": float}, optional "orientations":
    {"weight": float, "cells": [rows, cols], "bins": int}}. The proxies of a posterior are weights (zero
    here until loaded or set)."""
    from .backbones import build_backbone

    backbone = build_backbone(architecture["backbone"], **architecture.get("backbone_args", {}))
    head = EmbeddingHead(backbone.out_features, architecture["dim"], **architecture.get("head_args", {}))
    post = architecture.get("posterior")
    posterior = ClassPosterior(int(post["classes"]), head.dim, float(post["weight"]), float(post["temperature"])) \
        if post else None
    orient = architecture.get("orientations")
    orientations = None
    if orient:
        cells = tuple(orient.get("cells", OrientationHistogram.CELLS))
        bins = int(orient.get("bins", OrientationHistogram.BINS))
        orientations = OrientationHistogram(float(orient["weight"]), cells, bins)
    return EmbeddingNet(backbone, head, architecture.get("tta_shifts"), architecture.get("tta_flip", False),
                        posterior, orientations)
