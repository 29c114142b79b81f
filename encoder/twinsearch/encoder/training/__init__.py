"""Training: configuration and the training loop."""

from .config import TrainConfig
from .trainer import LOSSES, Trainer, TrainResult, architecture_for, build_loss

__all__ = ["LOSSES", "TrainConfig", "TrainResult", "Trainer", "architecture_for", "build_loss"]
