"""Samplers: index arrays into a labelled set (classic pairs, P x K batches, N-way k-shot episodes)."""

from .episodes import EpisodeSampler
from .pairs import PairBatchSampler, classic_pairs
from .pk import PKSampler

__all__ = ["EpisodeSampler", "PKSampler", "PairBatchSampler", "classic_pairs"]
