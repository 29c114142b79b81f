"""Threshold precedence, sources, FAR and probabilities; open-set decisions in identify."""

from __future__ import annotations

import numpy as np
import pytest

from twinsearch.client.errors import FailedPrecondition, InvalidArgument
from twinsearch.client.types import ThresholdSource
from twinsearch.server.thresholds import ThresholdPolicy

from .conftest import DIM, clustered, unit


def test_precedence(calibration):
    p = ThresholdPolicy(calibration, default="far_1")
    t = p.resolve(gallery_threshold=0.5, threshold=0.3, target_far=0.01)
    assert (t.distance, t.source) == (0.3, ThresholdSource.REQUEST)
    t = p.resolve(gallery_threshold=0.5, target_far=0.05)
    assert t.source == ThresholdSource.REQUEST_FAR and t.far == 0.05
    assert t.distance == pytest.approx(calibration.threshold_at_far(0.05))
    t = p.resolve(gallery_threshold=0.5)
    assert (t.distance, t.source) == (0.5, ThresholdSource.GALLERY)
    t = p.resolve()
    assert t.source == ThresholdSource.MODEL_FAR_1
    assert t.distance == calibration.points["far_1"].distance and t.far == calibration.points["far_1"].far
    assert ThresholdPolicy(calibration).resolve().source == ThresholdSource.MODEL_EER
    assert ThresholdPolicy(calibration, "far_0_1").resolve().source == ThresholdSource.MODEL_FAR_0_1


def test_without_calibration():
    p = ThresholdPolicy(None)
    assert p.probability(np.array([0.1])) is None
    assert p.resolve(threshold=0.4).source == ThresholdSource.REQUEST
    with pytest.raises(FailedPrecondition):
        p.resolve()
    with pytest.raises(FailedPrecondition):
        p.resolve(target_far=0.01)


@pytest.mark.parametrize("kwargs", [{"threshold": -1}, {"threshold": 2.5}, {"threshold": float("inf")}, {"target_far": 0},
                                    {"target_far": 1.5}, {"target_far": float("nan")}])
def test_bad_request_values(calibration, kwargs):
    with pytest.raises(InvalidArgument):
        ThresholdPolicy(calibration).resolve(**kwargs)


def test_identify_open_set_decision_and_probabilities(store, rng, calibration):
    x, labels = clustered(rng, 8, 4)
    store.create_gallery("g", fingerprint="m", dim=DIM)
    store.enroll("g", labels, x)
    policy = ThresholdPolicy(calibration)
    near = unit(x[:1] + 0.01 * rng.normal(size=(1, DIM)).astype(np.float32))
    far = -x[:1]  # the antipode: distance about 2 from its own class
    res = store.identify("g", np.concatenate([near, far]), policy=policy, k=3)
    assert res[0].label == labels[0] and res[0].known
    assert res[1].label is None and not res[1].known
    assert res[0].threshold.source == ThresholdSource.MODEL_EER
    for r in res:
        probs = [c.probability for c in r.candidates]
        assert all(0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True)
        assert r.margin == pytest.approx(r.candidates[1].distance - r.candidates[0].distance)
    # the request's threshold wins, and the answer says so
    res = store.identify("g", far, policy=policy, k=2, threshold=2.0)
    assert res[0].label is not None and res[0].threshold.source == ThresholdSource.REQUEST
    v = store.verify_class("g", near, [labels[0]], policy=policy, target_far=0.001)
    assert v[0].same and v[0].threshold.source == ThresholdSource.REQUEST_FAR and v[0].probability > 0.5
