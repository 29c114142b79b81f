"""Evaluation: pair verification, N-way k-shot accuracy, Recall@1 and MAP@R, reports and plots."""

from .metrics import oneshot_accuracy, pair_distances, retrieval, roc_auc, roc_curve, verification
from .report import all_pair_distances, calibrate, evaluate_embeddings

__all__ = ["all_pair_distances", "calibrate", "evaluate_embeddings", "oneshot_accuracy", "pair_distances",
           "retrieval", "roc_auc", "roc_curve", "verification"]
