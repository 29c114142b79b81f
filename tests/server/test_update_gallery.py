"""update_gallery: a gallery's thresholds and default scoring changed after creation, kept across a restart,
checked like at creation, refused while the gallery migrates."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from twinsearch.client import convert as c
from twinsearch.client.errors import FailedPrecondition, InvalidArgument, NotFound
from twinsearch.client.types import KEEP, Scoring, ThresholdSource
from twinsearch.server.engine import Engine, EngineSettings, EnrollItem
from twinsearch.v1 import twinsearch_pb2 as pb

from .conftest import DIM, TIMEOUT, unit

SETTINGS = EngineSettings(torch_threads=1, batch_wait_ms=0)


def test_settings_change_answers_and_survive_a_restart(tmp_path, model_path):
    rng = np.random.default_rng(21)
    v = unit(rng.normal(size=(6, DIM)))
    probe = unit(v[0] + 0.3 * rng.normal(size=DIM))
    with Engine.open(tmp_path, model_path, SETTINGS) as engine:
        engine.create_gallery("g")
        engine.enroll("g", [EnrollItem(f"k{i % 3}", v[i]) for i in range(6)])
        (before,) = engine.verify_class("g", [(probe, "k0")])
        assert before.threshold.source != ThresholdSource.GALLERY
        info = engine.update_gallery("g", threshold=0.25, cohort_threshold=0.6, scoring=Scoring.MEAN_OF_K, mean_k=2)
        assert (info.threshold, info.cohort_threshold, info.scoring, info.mean_k) == (0.25, 0.6, Scoring.MEAN_OF_K, 2)
        assert info.item_count == 6  # the items are untouched
        (plain,) = engine.verify_class("g", [(probe, "k0")])
        (cohort,) = engine.verify_class("g", [(probe, "k0")], cohort=True)
        assert (plain.threshold.distance, plain.threshold.source) == (0.25, ThresholdSource.GALLERY)
        assert (cohort.threshold.distance, cohort.threshold.source) == (0.6, ThresholdSource.GALLERY)
        d = np.sort(np.linalg.norm(v[0::3].astype(np.float64) - probe, axis=1))  # class k0: items 0 and 3
        assert plain.distance == pytest.approx(d.mean(), abs=1e-5)  # mean of its 2 nearest, the new default
        kept = engine.update_gallery("g", threshold=KEEP, cohort_threshold=KEEP)  # nothing changes
        assert (kept.threshold, kept.cohort_threshold, kept.scoring) == (0.25, 0.6, Scoring.MEAN_OF_K)
    with Engine.open(tmp_path, model_path, SETTINGS) as engine:
        info = engine.get_gallery("g")
        assert (info.threshold, info.cohort_threshold, info.scoring, info.mean_k) == (0.25, 0.6, Scoring.MEAN_OF_K, 2)
        cleared = engine.update_gallery("g", threshold=None, cohort_threshold=None)
        assert (cleared.threshold, cleared.cohort_threshold, cleared.scoring) == (None, None, Scoring.MEAN_OF_K)
        (again,) = engine.verify_class("g", [(probe, "k0")])
        assert again.threshold.source == before.threshold.source and again.threshold.distance == before.threshold.distance
        with pytest.raises(InvalidArgument, match="threshold"):
            engine.verify_class("g", [(probe, "k0")], cohort=True)


def test_bad_settings_change_nothing(vector_engine):
    vector_engine.create_gallery("g", threshold=0.4)
    for kwargs, field in (({"threshold": 2.5}, "threshold"), ({"cohort_threshold": float("nan")}, "cohort_threshold"),
                          ({"threshold": 0.3, "mean_k": 0}, "mean_k"), ({"scoring": "best"}, "scoring")):
        with pytest.raises(InvalidArgument) as err:
            vector_engine.update_gallery("g", **kwargs)
        assert err.value.field == field, kwargs
    assert vector_engine.get_gallery("g").threshold == 0.4
    with pytest.raises(NotFound):
        vector_engine.update_gallery("nope", threshold=0.3)


def test_refused_while_the_gallery_migrates(vector_engine):
    vector_engine.create_gallery("g", threshold=0.4)
    store = vector_engine.store
    store.start_migration("g", fingerprint="another-model", dim=DIM)
    with pytest.raises(FailedPrecondition, match="after the switch"):
        vector_engine.update_gallery("g", threshold=0.3)
    assert vector_engine.get_gallery("g").threshold == 0.4


def test_over_grpc(stub):
    stub.CreateGallery(pb.CreateGalleryRequest(name="upd", threshold=0.4), timeout=TIMEOUT)
    made = stub.UpdateGallery(pb.UpdateGalleryRequest(name="upd", cohort_threshold=0.55,
                                                      scoring=pb.SCORING_PROTOTYPE), timeout=TIMEOUT)
    assert made.threshold == pytest.approx(0.4) and made.cohort_threshold == pytest.approx(0.55)
    assert made.scoring == pb.SCORING_PROTOTYPE
    cleared = stub.UpdateGallery(pb.UpdateGalleryRequest(name="upd", clear_threshold=True), timeout=TIMEOUT)
    assert not cleared.HasField("threshold") and cleared.cohort_threshold == pytest.approx(0.55)
    for request in (pb.UpdateGalleryRequest(name="upd", threshold=0.3, clear_threshold=True),
                    pb.UpdateGalleryRequest(name="upd", cohort_threshold=-1.0)):
        with pytest.raises(grpc.RpcError) as err:
            stub.UpdateGallery(request, timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateGallery(pb.UpdateGalleryRequest(name="nope", threshold=0.3), timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # The request the client builds: None clears, KEEP leaves.
    request = c.gallery_update_to_pb("upd", threshold=None, cohort_threshold=KEEP, scoring=None, mean_k=None)
    assert request.clear_threshold and not request.HasField("cohort_threshold") and not request.clear_cohort_threshold


def test_the_python_client_resolves_operating_points_and_checks_types(tmp_path, model_path):
    from twinsearch.client import LocalClient

    with LocalClient(tmp_path, model_path, settings=SETTINGS) as client:
        client.create_gallery("g")
        far_1 = client.operating_point("far_1")
        assert client.update_gallery("g", threshold="far_1").threshold == far_1.distance
        for bad in ({"threshold": True}, {"cohort_threshold": "0.5"}):
            with pytest.raises(InvalidArgument, match="must be a number"):
                client.update_gallery("g", **bad)
        with pytest.raises(InvalidArgument, match="no operating point"):
            client.update_gallery("g", threshold="far_5")
        assert client.update_gallery("g", cohort_threshold=0.5).threshold == far_1.distance  # threshold kept
