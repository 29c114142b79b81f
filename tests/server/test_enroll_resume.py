"""Re-sent items (client ids already stored) are answered from the store without an encoder pass."""

from __future__ import annotations

import pytest

from twinsearch.server.engine import Engine, EnrollItem
from twinsearch.server.settings import EngineSettings

from .conftest import glyph, png


class CountingModel:
    """The real model, counting the images it embeds."""

    def __init__(self, model):
        self._model = model
        self.rows = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def embed_arrays(self, batch):
        self.rows += len(batch)
        return self._model.embed_arrays(batch)


@pytest.fixture
def engine(tmp_path, model_path):
    engine = Engine.open(tmp_path, model_path, EngineSettings(torch_threads=1))
    engine.model = CountingModel(engine.model)
    engine.create_gallery("g")
    yield engine
    engine.close()


def test_a_resent_batch_embeds_only_what_is_new(engine):
    first = engine.enroll("g", [EnrollItem(f"c{i}", png(glyph(i)), client_id=f"f{i}") for i in range(6)])
    assert engine.model.rows == 6
    assert all(e.created for e in first.stored)

    items = [EnrollItem(f"c{i}", png(glyph(i)), client_id=f"f{i}") for i in range(8)]
    again = engine.enroll("g", items)
    assert engine.model.rows == 6 + 2  # only f6 and f7 went through the encoder
    assert [e.client_id for e in again.stored] == [f"f{i}" for i in range(8)]  # request order
    assert [e.created for e in again.stored] == [False] * 6 + [True] * 2
    assert [e.id for e in again.stored[:6]] == [e.id for e in first.stored]
    assert engine.get_gallery("g").item_count == 8


def test_a_stored_client_id_with_a_broken_image_is_already_stored(engine):
    engine.enroll("g", [EnrollItem("c0", png(glyph(0)), client_id="f0")])
    again = engine.enroll("g", [EnrollItem("c0", b"not an image", client_id="f0"),
                                EnrollItem("c1", b"not an image either", client_id="f1")], skip_invalid=True)
    assert [(e.client_id, e.created) for e in again.stored] == [("f0", False)]
    assert [f.client_id for f in again.failed] == ["f1"]
