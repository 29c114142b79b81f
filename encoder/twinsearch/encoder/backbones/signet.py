"""SigNet (Dey et al. 2017), "SigNet: Convolutional Siamese Network for Writer Independent Offline
Signature Verification": 96@11x11 (stride 4 here, the original input is 155x220), LRN, pool 3/2,
256@5x5, LRN, pool, 384@3x3, 256@3x3, pool, then a 1024-unit layer. Grayscale signatures on white.
"""

from __future__ import annotations

import torch
from torch import nn

from .probe import feature_count


class SigNet(nn.Module):
    def __init__(self, in_channels: int = 1, input_size: int = 155, input_width: int | None = None,
                 dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, 11, stride=4), nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2), nn.MaxPool2d(3, 2), nn.Dropout(dropout),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Dropout(dropout),
        )
        n = feature_count(self.features, in_channels, input_size, input_width, "signet", "155 x 220")
        self.fc = nn.Sequential(nn.Linear(n, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.out_features = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))
