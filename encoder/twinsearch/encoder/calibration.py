"""Calibration: from genuine and impostor distances to thresholds and probabilities.

Distances here are Euclidean distances between L2-normalised embeddings: in [0, 2], smaller means
more alike. A pair is declared "same" when its distance is <= the threshold.

`Calibration.fit(genuine, impostor)` takes distances measured on held-out classes (classes the model
did not train on) and gives:

- three operating points, each a distance threshold with the rates measured at it:
  EER (false-accept rate equals false-reject rate), FAR 1% and FAR 0.1%;
- a curve from a target false-accept rate to the threshold that gives it (`threshold_at_far`);
- a logistic mapping from distance to a probability of "same" (`probability`), fitted with both
  classes weighted equally, i.e. it assumes a prior of 1/2 that a pair is genuine.

The object is plain data (numbers and lists) and round-trips through JSON with `to_dict`/`from_dict`,
so it can live in a model card that is readable without torch. This module needs only numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Names of the operating points, as stored in model cards and reported by the server.
EER = "eer"
FAR_1 = "far_1"
FAR_0_1 = "far_0_1"
OPERATING_POINTS = (EER, FAR_1, FAR_0_1)
_TARGET_FAR = {FAR_1: 0.01, FAR_0_1: 0.001}

# False-accept rates at which the FAR -> threshold curve is sampled.
_CURVE_FARS = np.unique(np.concatenate([np.logspace(-5, -1, 161), np.linspace(0.1, 1.0, 91)]))


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold and what was measured at it on the calibration pairs.

    `distance`: accept as "same" when distance <= this (Euclidean, smaller = more alike).
    `far`: fraction of impostor pairs accepted at it; `frr`: fraction of genuine pairs rejected.
    """

    name: str
    distance: float
    far: float
    frr: float


@dataclass(frozen=True)
class Calibration:
    """Thresholds and a distance-to-probability mapping measured on held-out pairs."""

    genuine_pairs: int
    impostor_pairs: int
    points: dict[str, OperatingPoint]
    # Logistic mapping p(same | d) = 1 / (1 + exp(slope * d + intercept)); slope > 0.
    slope: float
    intercept: float
    # (far, distance) samples of the impostor distance distribution, far increasing.
    far_curve: list[tuple[float, float]] = field(default_factory=list)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, genuine: np.ndarray, impostor: np.ndarray) -> Calibration:
        """Fit from 1-D arrays of genuine (same-class) and impostor (different-class) distances."""
        genuine = np.asarray(genuine, dtype=np.float64).ravel()
        impostor = np.asarray(impostor, dtype=np.float64).ravel()
        if genuine.size < 2 or impostor.size < 2:
            raise ValueError("calibration needs at least 2 genuine and 2 impostor distances")
        if not (np.isfinite(genuine).all() and np.isfinite(impostor).all()):
            raise ValueError("calibration distances must be finite")
        points = {EER: _eer_point(genuine, impostor)}
        for name, target in _TARGET_FAR.items():
            points[name] = _point_at_far(name, target, genuine, impostor)
        slope, intercept = _fit_logistic(genuine, impostor)
        curve_d = np.quantile(np.sort(impostor), _CURVE_FARS, method="lower")
        far_curve = [(float(f), float(d)) for f, d in zip(_CURVE_FARS, curve_d, strict=True)]
        return cls(int(genuine.size), int(impostor.size), points, slope, intercept, far_curve)

    # ------------------------------------------------------------------ using
    def threshold(self, name: str) -> OperatingPoint:
        """The operating point `name` (one of OPERATING_POINTS); KeyError if unknown."""
        return self.points[name]

    def threshold_at_far(self, far: float) -> float:
        """Distance threshold whose false-accept rate on the calibration impostors is about `far`.

        `far` must be in (0, 1]. Rates below 1 / impostor_pairs cannot be measured; they are clamped
        to the smallest measured impostor distance quantile.
        """
        if not (0.0 < far <= 1.0):
            raise ValueError(f"target false-accept rate must be in (0, 1], got {far}")
        fars = np.array([f for f, _ in self.far_curve])
        dists = np.array([d for _, d in self.far_curve])
        return float(np.interp(np.log(far), np.log(fars), dists))

    def probability(self, distances: np.ndarray | float) -> np.ndarray:
        """Calibrated probability of "same" for each distance (prior 1/2); same shape as input."""
        d = np.asarray(distances, dtype=np.float64)
        z = np.clip(self.slope * d + self.intercept, -60.0, 60.0)
        return 1.0 / (1.0 + np.exp(z))

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict:
        out = asdict(self)
        out["far_curve"] = [list(p) for p in self.far_curve]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        try:
            points = {k: OperatingPoint(**v) for k, v in data["points"].items()}
            missing = set(OPERATING_POINTS) - set(points)
            if missing:
                raise ValueError(f"calibration lacks operating points {sorted(missing)}")
            return cls(
                genuine_pairs=int(data["genuine_pairs"]),
                impostor_pairs=int(data["impostor_pairs"]),
                points=points,
                slope=float(data["slope"]),
                intercept=float(data["intercept"]),
                far_curve=[(float(f), float(d)) for f, d in data["far_curve"]],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed calibration data: {exc}") from exc


def _rates(threshold: float, genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    far = float(np.mean(impostor <= threshold))
    frr = float(np.mean(genuine > threshold))
    return far, frr


def _eer_point(genuine: np.ndarray, impostor: np.ndarray) -> OperatingPoint:
    candidates = np.unique(np.concatenate([genuine, impostor]))
    g = np.sort(genuine)
    i = np.sort(impostor)
    far = np.searchsorted(i, candidates, side="right") / i.size
    frr = 1.0 - np.searchsorted(g, candidates, side="right") / g.size
    best = int(np.argmin(np.abs(far - frr)))
    return OperatingPoint(EER, float(candidates[best]), float(far[best]), float(frr[best]))


def _point_at_far(name: str, target: float, genuine: np.ndarray, impostor: np.ndarray) -> OperatingPoint:
    """Largest threshold whose measured false-accept rate does not exceed `target`."""
    i = np.sort(impostor)
    allowed = int(np.floor(target * i.size))  # impostors that may be accepted
    if allowed == 0:
        # Below the smallest impostor distance: accept nothing that any impostor reached.
        threshold = float(np.nextafter(i[0], -np.inf))
    else:
        threshold = float(i[allowed - 1])
    far, frr = _rates(threshold, genuine, impostor)
    return OperatingPoint(name, threshold, far, frr)


def _fit_logistic(genuine: np.ndarray, impostor: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Class-balanced logistic regression of "same" on distance by Newton's method.

    Returns (slope, intercept) for p(same | d) = 1 / (1 + exp(slope * d + intercept)).
    """
    d = np.concatenate([genuine, impostor])
    y = np.concatenate([np.ones(genuine.size), np.zeros(impostor.size)])
    w = np.concatenate([np.full(genuine.size, 0.5 / genuine.size), np.full(impostor.size, 0.5 / impostor.size)])
    x = np.stack([d, np.ones_like(d)], axis=1)
    beta = np.zeros(2)  # p = sigmoid(x @ beta), beta = (-slope, -intercept)
    ridge = 1e-6 * np.eye(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -60, 60)))
        grad = x.T @ (w * (y - p))
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + ridge
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(-beta[0]), float(-beta[1])
