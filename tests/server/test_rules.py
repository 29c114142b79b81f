"""Requests are parsed once, at the engine boundary: the rules hold the same whichever way a call comes
in, errors name the caller's own item, and gathered searches are keyed by frozen query objects."""

from __future__ import annotations

import dataclasses

import pytest

from twinsearch.client.errors import InvalidArgument
from twinsearch.server.engine import Engine, EnrollItem
from twinsearch.server.limits import DEFAULTS, LIMITS
from twinsearch.server.queries import IdentifyQuery, SearchKey, SearchQuery
from twinsearch.server.settings import EngineSettings

from .conftest import glyph, png


@pytest.fixture
def engine(tmp_path, model_path):
    with Engine.open(tmp_path, model_path, EngineSettings(torch_threads=1, batch_wait_ms=0)) as e:
        e.create_gallery("g")
        e.enroll("g", [EnrollItem(f"c{i}", png(glyph(i))) for i in range(3)])
        yield e


def test_a_threshold_and_a_target_far_together_are_refused_by_every_query(engine):
    probe = png(glyph(0))
    for call in (lambda: engine.identify("g", [probe], threshold=0.5, target_far=0.01),
                 lambda: engine.verify_class("g", [(probe, "c0")], threshold=0.5, target_far=0.01),
                 lambda: engine.verify([(probe, probe)], threshold=0.5, target_far=0.01)):
        with pytest.raises(InvalidArgument, match="not both") as err:
            call()
        assert err.value.field == "threshold"


def test_an_over_long_client_id_is_named_by_its_request_position(engine):
    items = [EnrollItem("ok", png(glyph(0)), client_id="a"),
             EnrollItem("long", png(glyph(1)), client_id="x" * (LIMITS.client_id_length + 1))]
    with pytest.raises(InvalidArgument, match=r": items\[1\]: client id is 257 characters") as err:
        engine.enroll("g", items)
    assert err.value.field == "items[1].client_id"
    result = engine.enroll("g", items, skip_invalid=True)
    assert [f.index for f in result.failed] == [1] and len(result.stored) == 1


def test_a_bad_mean_k_is_refused_before_any_embedding(engine):
    embedded = []
    real = engine._embed_prepared
    engine._embed_prepared = lambda *a, **kw: embedded.append(1) or real(*a, **kw)
    with pytest.raises(InvalidArgument, match="mean_k must be between 1 and") as err:
        engine.identify("g", [png(glyph(0))], mean_k=LIMITS.max_k + 1)
    assert err.value.field == "mean_k" and not embedded


def test_gathered_searches_are_keyed_by_frozen_query_objects(engine):
    keys = []
    real = engine._searcher.call
    engine._searcher.call = lambda key, *a, **kw: keys.append(key) or real(key, *a, **kw)
    engine.identify("g", [png(glyph(0))], threshold=1.0)
    engine.search("g", [png(glyph(0))])
    identify, search = keys
    for key in keys:
        assert isinstance(key, SearchKey) and dataclasses.is_dataclass(key)
        with pytest.raises(dataclasses.FrozenInstanceError):
            key.gallery = "other"
        assert key.gallery == "g" and key.model == engine.models.default.name
    assert isinstance(identify.query, IdentifyQuery) and identify.op == "identify"
    assert identify.query.k == DEFAULTS.identify_k and identify.query.decision.threshold == 1.0
    assert isinstance(search.query, SearchQuery) and search.query.k == DEFAULTS.search_k
