"""Backbones: (N, C, H, W) float32 -> (N, out_features) features. Built by name from the model card."""

from __future__ import annotations

from torch import nn

from .conv4 import Conv4
from .koch import KochNet
from .resnet import SmallResNet
from .signet import SigNet

BACKBONES: dict[str, type[nn.Module]] = {"conv4": Conv4, "koch": KochNet, "signet": SigNet, "resnet": SmallResNet}


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Instantiate backbone `name` (one of BACKBONES) with its keyword arguments."""
    try:
        cls = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}") from None
    return cls(**kwargs)


__all__ = ["BACKBONES", "Conv4", "KochNet", "SigNet", "SmallResNet", "build_backbone"]
