"""Which distance threshold decides "same", and where it came from.

Precedence, first that applies: the request's explicit threshold, the request's target false-accept
rate (mapped to a distance by the model card's calibration), the gallery's override, the model
card's default operating point (EER, FAR 1% or FAR 0.1%). Distances are Euclidean between
L2-normalised embeddings; "same" when distance <= threshold.
"""

from __future__ import annotations

import numpy as np

from twinsearch.client.errors import FailedPrecondition
from twinsearch.client.types import Threshold, ThresholdSource
from twinsearch.encoder.calibration import EER, FAR_0_1, FAR_1, Calibration

from .validation import check_target_far, check_threshold

MODEL_SOURCES = {
    EER: ThresholdSource.MODEL_EER,
    FAR_1: ThresholdSource.MODEL_FAR_1,
    FAR_0_1: ThresholdSource.MODEL_FAR_0_1,
}


class ThresholdPolicy:
    """Resolves the threshold for a request from the model's calibration (or none) and overrides.

    `default` names the model card's operating point used when nothing else gives a threshold.
    """

    def __init__(self, calibration: Calibration | None, default: str = EER):
        if default not in MODEL_SOURCES:
            raise ValueError(f"default operating point must be one of {sorted(MODEL_SOURCES)}, got {default!r}")
        self.calibration = calibration
        self.default = default

    def resolve(
        self,
        *,
        gallery_threshold: float | None = None,
        threshold: float | None = None,
        target_far: float | None = None,
    ) -> Threshold:
        """The threshold in force; FailedPrecondition when nothing gives one (no calibration)."""
        threshold = check_threshold(threshold)
        if threshold is not None:
            return Threshold(threshold, ThresholdSource.REQUEST, self._far_at(threshold))
        if target_far is not None:
            far = check_target_far(target_far)
            if self.calibration is None:
                raise FailedPrecondition(
                    "a target false-accept rate needs a calibrated model; this model card has no calibration"
                )
            # A rate below the smallest the calibration pairs measure maps to the distance of that smallest
            # rate, and the answer says that rate: the one measured at the threshold used, not the one asked.
            floor = min((f for f, _ in self.calibration.far_curve), default=far)
            return Threshold(self.calibration.threshold_at_far(far), ThresholdSource.REQUEST_FAR, max(far, floor))
        if gallery_threshold is not None:
            return Threshold(float(gallery_threshold), ThresholdSource.GALLERY, self._far_at(gallery_threshold))
        if self.calibration is None:
            raise FailedPrecondition(
                "no decision threshold: the model card has no calibration, the gallery has no threshold "
                "override and the request gives neither a threshold nor a target false-accept rate"
            )
        point = self.calibration.threshold(self.default)
        return Threshold(float(point.distance), MODEL_SOURCES[self.default], float(point.far))

    def probability(self, distances: np.ndarray) -> np.ndarray | None:
        """Calibrated probability of "same" per distance (same shape), or None without calibration."""
        if self.calibration is None:
            return None
        return self.calibration.probability(np.asarray(distances, dtype=np.float64))

    def _far_at(self, distance: float) -> float | None:
        """False-accept rate at `distance` read off the calibration's FAR curve, when there is one."""
        if self.calibration is None or not self.calibration.far_curve:
            return None
        fars = np.array([f for f, _ in self.calibration.far_curve])
        dists = np.array([d for _, d in self.calibration.far_curve])
        if distance < dists[0]:
            return None  # below the smallest measured rate: not measurable on these pairs
        return float(np.interp(distance, dists, fars))
