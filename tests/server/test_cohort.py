"""verify_class with cohort normalization: the score, the threshold it needs, and the errors.

The score is the class distance over the fourth root (`COHORT_POWER`) of the probe's distance to the
nearest other enrolled class, computed here directly from the vectors.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from twinsearch.client import convert as c
from twinsearch.client.errors import FailedPrecondition, InvalidArgument, NotFound
from twinsearch.client.types import Scoring, ThresholdSource
from twinsearch.encoder.evaluation.references import COHORT_POWER
from twinsearch.server.engine import EnrollItem
from twinsearch.v1 import twinsearch_pb2 as pb

from .conftest import DIM, TIMEOUT, unit


def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a.astype(np.float64)[:, None] - b.astype(np.float64)[None], axis=2)


def test_the_score_is_the_class_distance_over_a_root_of_the_nearest_other_class(vector_engine):
    rng = np.random.default_rng(7)
    v = unit(rng.normal(size=(12, DIM)))  # 4 classes of 3 vectors
    vector_engine.create_gallery("g")
    vector_engine.enroll("g", [EnrollItem(f"c{i // 3}", v[i]) for i in range(12)])
    probes = unit(np.concatenate([v[:4] + 0.2 * rng.normal(size=(4, DIM)), rng.normal(size=(4, DIM))]))
    claims = ["c0", "c1", "c2", "c3", "c0", "c1", "c2", "c3"]
    for scoring in (Scoring.NEAREST, Scoring.MEAN_OF_K):
        answers = vector_engine.verify_class("g", list(zip(probes, claims, strict=True)), scoring=scoring, mean_k=2,
                                      threshold=0.6, cohort=True)
        plain = vector_engine.verify_class("g", list(zip(probes, claims, strict=True)), scoring=scoring, mean_k=2,
                                    threshold=0.6)
        for p, claim, answer, raw in zip(probes, claims, answers, plain, strict=True):
            d = dist(p[None], v)[0].reshape(4, 3)
            per_class = d.min(1) if scoring == Scoring.NEAREST else np.sort(d, 1)[:, :2].mean(1)
            own = int(claim[1])
            expected = per_class[own] / np.delete(per_class, own).min() ** COHORT_POWER
            assert raw.distance == pytest.approx(per_class[own], abs=1e-6)
            assert answer.distance == pytest.approx(expected, rel=1e-5)
            assert answer.same == (answer.distance <= 0.6)
            assert answer.threshold.distance == 0.6 and answer.threshold.source == ThresholdSource.REQUEST
            assert answer.threshold.far is None and answer.probability is None


def test_it_needs_a_threshold_of_its_own_and_two_classes(vector_engine):
    rng = np.random.default_rng(8)
    v = unit(rng.normal(size=(4, DIM)))
    vector_engine.create_gallery("one", threshold=0.5)
    vector_engine.enroll("one", [EnrollItem("a", v[0]), EnrollItem("a", v[1])])
    for kwargs in ({}, {"target_far": 0.01}):  # the gallery's threshold (0.5) does not count either
        with pytest.raises(InvalidArgument, match="cohort"):
            vector_engine.verify_class("one", [(v[2], "a")], cohort=True, **kwargs)
    with pytest.raises(FailedPrecondition, match="two classes"):
        vector_engine.verify_class("one", [(v[2], "a")], cohort=True, threshold=0.5)
    vector_engine.enroll("one", [EnrollItem("b", v[3])])
    (answer,) = vector_engine.verify_class("one", [(v[0], "a")], cohort=True, threshold=0.5)
    assert answer.distance == 0.0 and answer.same  # an enrolled vector itself
    with pytest.raises(NotFound):
        vector_engine.verify_class("one", [(v[0], "zzz")], cohort=True, threshold=0.5)
    with pytest.raises(InvalidArgument, match="cohort"):
        vector_engine.verify_class("one", [(v[0], "a")], cohort="yes", threshold=0.5)


def test_a_gallery_cohort_threshold_serves_cohort_calls_that_give_none(tmp_path, model_path):
    from twinsearch.server.engine import Engine, EngineSettings

    rng = np.random.default_rng(11)
    v = unit(rng.normal(size=(6, DIM)))
    settings = EngineSettings(torch_threads=1, batch_wait_ms=0)
    with Engine.open(tmp_path, model_path, settings) as engine:
        for bad in (-0.1, float("nan"), 2.5, "x"):
            with pytest.raises(InvalidArgument) as err:
                engine.create_gallery("bad", cohort_threshold=bad)
            assert err.value.field == "cohort_threshold"
        info = engine.create_gallery("g", threshold=0.3, cohort_threshold=0.45)
        assert (info.threshold, info.cohort_threshold) == (0.3, 0.45)
        engine.enroll("g", [EnrollItem(f"k{i % 3}", v[i]) for i in range(6)])
        probe = unit(v[0] + 0.3 * rng.normal(size=DIM))
        (from_gallery,) = engine.verify_class("g", [(probe, "k0")], cohort=True)
        (from_request,) = engine.verify_class("g", [(probe, "k0")], cohort=True, threshold=0.9)
        (plain,) = engine.verify_class("g", [(probe, "k0")])
        assert from_gallery.threshold.distance == 0.45 and from_gallery.threshold.source == ThresholdSource.GALLERY
        assert from_gallery.same == (from_gallery.distance <= 0.45) and from_gallery.probability is None
        assert from_request.threshold.distance == 0.9 and from_request.threshold.source == ThresholdSource.REQUEST
        assert from_request.distance == from_gallery.distance
        assert plain.threshold.distance == 0.3  # plain calls keep the gallery's distance threshold
        with pytest.raises(InvalidArgument) as err:
            engine.verify_class("g", [(probe, "k0")], cohort=True, target_far=0.01)
        assert err.value.field == "target_far"
    with Engine.open(tmp_path, model_path, settings) as engine:  # kept across a restart
        assert engine.get_gallery("g").cohort_threshold == 0.45
        (again,) = engine.verify_class("g", [(probe, "k0")], cohort=True)
        assert again.threshold.source == ThresholdSource.GALLERY and again.distance == from_gallery.distance


def test_over_grpc(stub):
    rng = np.random.default_rng(9)
    v = unit(rng.normal(size=(6, DIM)))
    stub.CreateGallery(pb.CreateGalleryRequest(name="cohort"), timeout=TIMEOUT)
    stub.Enroll(pb.EnrollRequest(gallery="cohort", items=[
        pb.EnrollItem(label=f"k{i % 3}", input=c.input_to_pb(v[i])) for i in range(6)]),
        timeout=TIMEOUT)
    probe = unit(v[0] + 0.1 * rng.normal(size=DIM))
    query = pb.ClassQuery(probe=c.input_to_pb(probe), label="k0")
    answer = stub.VerifyClass(pb.VerifyClassRequest(gallery="cohort", queries=[query], cohort=True,
                                                    threshold=pb.ThresholdOptions(threshold=0.9)), timeout=TIMEOUT)
    per_class = dist(probe[None], v)[0].reshape(2, 3).min(0)  # items i and i + 3 share class k{i % 3}
    expected = per_class[0] / per_class[1:].min() ** COHORT_POWER
    assert answer.results[0].distance == pytest.approx(expected, rel=1e-5)
    with pytest.raises(grpc.RpcError) as err:
        stub.VerifyClass(pb.VerifyClassRequest(gallery="cohort", queries=[query], cohort=True), timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "threshold" in err.value.details()
    gallery = stub.CreateGallery(pb.CreateGalleryRequest(name="cohort2", cohort_threshold=0.7), timeout=TIMEOUT)
    assert gallery.HasField("cohort_threshold") and gallery.cohort_threshold == pytest.approx(0.7)
    assert stub.GetGallery(pb.GetGalleryRequest(name="cohort2"), timeout=TIMEOUT).cohort_threshold == pytest.approx(0.7)
    assert not stub.GetGallery(pb.GetGalleryRequest(name="cohort"), timeout=TIMEOUT).HasField("cohort_threshold")
    stub.Enroll(pb.EnrollRequest(gallery="cohort2", items=[
        pb.EnrollItem(label=f"k{i % 3}", input=c.input_to_pb(v[i])) for i in range(6)]), timeout=TIMEOUT)
    answer = stub.VerifyClass(pb.VerifyClassRequest(gallery="cohort2", queries=[query], cohort=True), timeout=TIMEOUT)
    assert answer.results[0].distance == pytest.approx(expected, rel=1e-5)
    assert answer.results[0].threshold.source == pb.THRESHOLD_SOURCE_GALLERY
    assert answer.results[0].threshold.distance == pytest.approx(0.7)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateGallery(pb.CreateGalleryRequest(name="cohort3", cohort_threshold=-1.0), timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cohort threshold" in err.value.details()


def test_a_ranking_that_found_no_other_class_falls_back_to_ranking_the_others(vector_engine, monkeypatch):
    # An approximate index may return the claimed class alone among its top 2; the nearest other class
    # is then found by ranking the other classes only. Forced here by trimming the first ranking.
    from twinsearch.server.scoring import ClassScores

    rng = np.random.default_rng(10)
    v = unit(rng.normal(size=(9, DIM)))
    vector_engine.create_gallery("g")
    vector_engine.enroll("g", [EnrollItem(f"c{i % 3}", v[i]) for i in range(9)])
    gallery = vector_engine.store._gallery("g")
    probe = unit(v[0] + 0.05 * rng.normal(size=DIM))
    per_class = dist(probe[None], v)[0].reshape(3, 3).min(0)
    expected = per_class[1:].min()
    assert gallery.nearest_other_class(probe[None], ["c0"], Scoring.NEAREST, 1)[0] == pytest.approx(expected)
    real_rank, calls = gallery.rank, []

    def trimmed(queries, k, scoring, mean_k, labels=None):
        calls.append(labels)
        out = real_rank(queries, k, scoring, mean_k, labels)
        return [ClassScores(s.slots[:1], s.distances[:1], s.nearest_ids[:1]) for s in out] if labels is None else out

    monkeypatch.setattr(gallery, "rank", trimmed)
    assert gallery.nearest_other_class(probe[None], ["c0"], Scoring.NEAREST, 1)[0] == pytest.approx(expected)
    assert calls == [None, ["c1", "c2"]]
