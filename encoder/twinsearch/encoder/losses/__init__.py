"""Losses on L2-normalised embeddings: (B, D) embeddings and (B,) labels -> scalar."""

from .base import BaseMetricLoss, pairwise_distances
from .contrastive import ContrastiveLoss
from .normsoftmax import NormSoftmaxLoss
from .prototypical import PrototypicalLoss
from .triplet import TripletLoss

__all__ = ["BaseMetricLoss", "ContrastiveLoss", "NormSoftmaxLoss", "PrototypicalLoss", "TripletLoss",
           "pairwise_distances"]
