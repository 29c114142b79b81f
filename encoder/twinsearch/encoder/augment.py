"""Augmentation for training: random affine distortions on a batch, and extra classes from rotations.

`RandomAffine` follows Koch et al. (2015): each image of a batch gets its own rotation, shear, scale and
translation, applied with one `affine_grid`/`grid_sample` call (fast on CPU and GPU). Pixels from outside
are filled with `fill` (use the normalised background, 0 for inverted ink). An optional random stroke
thickness change (grey dilation or erosion by a 3x3 max-pool) suits pen strokes, and an optional elastic
distortion (smooth random displacement field, Simard et al. 2003) imitates another hand drawing the same
character.

`expand_rotations` adds rotated copies (90, 180, 270 degrees) of every image as new classes: a classic
trick for Omniglot that multiplies the number of training classes by 4. Images that are not square get
the copies that keep their shape instead (turned 180 degrees, mirrored either way).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class RandomAffine:
    """Batch affine augmentation. Angles in degrees; `shear` in radians; `scale` a (low, high) range;
    `translate` a fraction of the image size; `p` the probability an image is transformed at all;
    `thickness` the probability of a random dilation or erosion (for ink data, ink high); `elastic` the size
of random smooth displacements (fraction of the image); `hflip` the probability of a left-right mirror."""

    def __init__(self, rotation: float = 10.0, shear: float = 0.3, scale: tuple[float, float] = (0.8, 1.2),
                 translate: float = 0.1, p: float = 1.0, fill: float = 0.0, thickness: float = 0.0,
                 elastic: float = 0.0, elastic_grid: int = 4, hflip: float = 0.0):
        self.rotation = rotation
        self.shear = shear
        self.scale = scale
        self.translate = translate
        self.p = p
        self.fill = fill
        self.thickness = thickness
        self.elastic = elastic
        self.elastic_grid = elastic_grid
        self.hflip = hflip

    def to_dict(self) -> dict:
        return dict(rotation=self.rotation, shear=self.shear, scale=list(self.scale), translate=self.translate,
                    p=self.p, fill=self.fill, thickness=self.thickness, elastic=self.elastic,
                    elastic_grid=self.elastic_grid, hflip=self.hflip)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (N, C, H, W) float32 -> same shape, each image distorted independently."""
        n = x.shape[0]

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=generator)

        rot = u(-self.rotation, self.rotation) * math.pi / 180
        shx = u(-self.shear, self.shear)
        shy = u(-self.shear, self.shear)
        sx = u(*self.scale)
        sy = u(*self.scale)
        tx = u(-self.translate, self.translate) * 2
        ty = u(-self.translate, self.translate) * 2
        keep = torch.rand(n, generator=generator) >= self.p
        if self.hflip > 0:  # (drawn only when asked, so that other recipes keep their random streams)
            flip = torch.rand(n, generator=generator) < self.hflip
            sx = torch.where(flip, -sx, sx)  # mirror left-right (clothing, faces; not characters)
        cos, sin = torch.cos(rot), torch.sin(rot)
        # A = R @ Sh @ S, mapping output coordinates to input coordinates (grid_sample's convention).
        a11 = (cos - sin * shy) * sx
        a12 = (cos * shx - sin) * sy
        a21 = (sin + cos * shy) * sx
        a22 = (sin * shx + cos) * sy
        theta = torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)
        identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(n, 2, 3)
        theta = torch.where(keep[:, None, None], identity, theta).to(x.dtype).to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        if self.elastic > 0:
            # Smooth random displacements: normal noise on a coarse grid, upsampled (bicubic) to the image.
            g = self.elastic_grid
            noise = torch.randn(n, 2, g, g, generator=generator) * (2 * self.elastic)
            noise = noise * (~keep).to(noise.dtype)[:, None, None, None]
            field = F.interpolate(noise, size=x.shape[2:], mode="bicubic", align_corners=False)
            grid = grid + field.permute(0, 2, 3, 1).to(grid.dtype).to(grid.device)
        out = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + self.fill
        if self.thickness > 0:
            r = torch.rand(n, generator=generator)
            dilate = (r < self.thickness / 2).to(x.device)
            erode = ((r >= self.thickness / 2) & (r < self.thickness)).to(x.device)
            if dilate.any():
                out[dilate] = F.max_pool2d(out[dilate], 3, stride=1, padding=1)
            if erode.any():
                out[erode] = -F.max_pool2d(-out[erode], 3, stride=1, padding=1)
        return out


def expand_rotations(images: np.ndarray, labels: np.ndarray, num_classes: int
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """Add turned or mirrored copies as new classes. images (N, C, H, W); labels (N,) in [0, num_classes).

    Square images get the three quarter turns (90, 180, 270 degrees); others, whose shape a quarter turn
    would change (signatures), get the three copies that keep it: turned 180 degrees, mirrored left to
    right, and mirrored top to bottom. Returns (images, labels, num_classes * 4), the i-th copy (i from
    1) of class `c` labelled `c + i * num_classes`.
    """
    if images.shape[2] == images.shape[3]:
        copies = [np.rot90(images, k=k, axes=(2, 3)) for k in (1, 2, 3)]
    else:
        copies = [images[:, :, ::-1, ::-1], images[:, :, :, ::-1], images[:, :, ::-1, :]]
    parts, labs = [images], [labels]
    for i, copy in enumerate(copies, start=1):
        parts.append(np.ascontiguousarray(copy))
        labs.append(labels + i * num_classes)
    return np.concatenate(parts), np.concatenate(labs), num_classes * (len(copies) + 1)
