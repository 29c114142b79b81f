"""Koch, Zemel and Salakhutdinov (2015), "Siamese Neural Networks for One-shot Image Recognition".

The convolutional tower for 105x105 grayscale characters: 64@10x10, pool, 128@7x7, pool, 128@4x4, pool,
256@4x4, flatten (9216 features at 105 px). The paper's 4096-unit sigmoid layer is the head here.
BatchNorm after each convolution is optional (off reproduces the paper's shape). It takes inputs of
65 x 65 pixels and more, and wide or tall ones (`input_width`).
"""

from __future__ import annotations

import torch
from torch import nn

from .probe import feature_count


def _block(cin: int, cout: int, k: int, bn: bool, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


class KochNet(nn.Module):
    def __init__(self, in_channels: int = 1, input_size: int = 105, batchnorm: bool = True,
                 input_width: int | None = None):
        super().__init__()
        self.features = nn.Sequential(
            *_block(in_channels, 64, 10, batchnorm, True),
            *_block(64, 128, 7, batchnorm, True),
            *_block(128, 128, 4, batchnorm, True),
            *_block(128, 256, 4, batchnorm, False),
        )
        self.out_features = feature_count(self.features, in_channels, input_size, input_width, "koch", "105 x 105")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)
