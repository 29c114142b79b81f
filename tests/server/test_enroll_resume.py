"""Re-sent items (client ids already stored) are answered from the store without an encoder pass; a
client id sent again with another image is refused, not answered as stored."""

from __future__ import annotations

import numpy as np
import pytest

from twinsearch.client.errors import AlreadyExists
from twinsearch.server import images
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


def test_a_stored_client_id_with_other_bytes_is_refused_without_decoding(engine):
    engine.enroll("g", [EnrollItem("c0", png(glyph(0)), client_id="f0")])
    again = engine.enroll("g", [EnrollItem("c0", png(glyph(0)), client_id="f0"),
                                EnrollItem("c0", b"not an image", client_id="f0b"),
                                EnrollItem("c1", b"not an image either", client_id="f1")], skip_invalid=True)
    assert [(e.client_id, e.created) for e in again.stored] == [("f0", False)]
    assert [f.client_id for f in again.failed] == ["f0b", "f1"]
    engine.model.rows = 0
    broken = engine.enroll("g", [EnrollItem("c0", b"not an image", client_id="f0")], skip_invalid=True)
    assert broken.stored == () and engine.model.rows == 0
    assert "names another image" in broken.failed[0].reason


def touched(pixels: np.ndarray) -> np.ndarray:
    """The same image but one pixel: another image for its client id."""
    pixels = pixels.copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    return pixels


def test_another_image_under_a_stored_client_id_is_refused(engine):
    first = engine.enroll("g", [EnrollItem("c0", png(glyph(0)), client_id="f0")]).stored[0]
    replaced = EnrollItem("c0", png(touched(glyph(0))), client_id="f0")
    with pytest.raises(AlreadyExists, match=rf"items\[1\]: client id 'f0' names another image in gallery 'g' "
                                            rf"\(item {first.id}\): delete that item first"):
        engine.enroll("g", [EnrollItem("c1", png(glyph(1)), client_id="f1"), replaced])
    assert engine.get_gallery("g").item_count == 1  # nothing of the batch was stored

    answer = engine.enroll("g", [EnrollItem("c1", png(glyph(1)), client_id="f1"), replaced], skip_invalid=True)
    assert [(e.client_id, e.created) for e in answer.stored] == [("f1", True)]
    assert [(f.index, f.client_id) for f in answer.failed] == [(1, "f0")]
    assert f"(item {first.id})" in answer.failed[0].reason

    # Deleting the stored item frees its client id for the new image.
    engine.delete("g", client_ids=["f0"])
    assert engine.enroll("g", [replaced]).stored[0].created


def test_pixel_arrays_are_compared_and_vectors_are_not(engine):
    pixels = glyph(2)
    engine.enroll("g", [EnrollItem("c2", pixels, client_id="a")])
    assert not engine.enroll("g", [EnrollItem("c2", pixels.copy(), client_id="a")]).stored[0].created
    with pytest.raises(AlreadyExists, match="names another image"):
        engine.enroll("g", [EnrollItem("c2", touched(pixels), client_id="a")])

    # The same image embedded again elsewhere may differ in its last bits: a vector is never refused.
    v, w = np.eye(2, engine.get_gallery("g").dim, dtype=np.float32)
    engine.enroll("g", [EnrollItem("x", v, client_id="vec")])
    assert not engine.enroll("g", [EnrollItem("x", w, client_id="vec")]).stored[0].created


def test_the_store_refuses_another_image_stored_after_the_engine_looked(engine):
    """Two calls with one client id at once: the second finds it only inside its transaction."""
    stored = engine.enroll("g", [EnrollItem("c0", png(glyph(0)), client_id="f0")]).stored[0]
    sent = [png(touched(glyph(0))), png(glyph(4))]
    vectors = engine.model.embed(sent)
    digests = [images.payload_digest(b) for b in sent]
    with pytest.raises(AlreadyExists, match=rf"client id 'f0' names another image .*\(item {stored.id}\)"):
        engine.store.enroll("g", ["c0", "c4"], vectors, client_ids=["f0", "f4"], digests=digests,
                            fingerprint=engine.model.fingerprint)
    assert engine.get_gallery("g").item_count == 1
    same = engine.store.enroll("g", ["c0"], vectors[:1], client_ids=["f0"],
                               digests=[images.payload_digest(png(glyph(0)))], fingerprint=engine.model.fingerprint)
    assert [(e.id, e.created) for e in same] == [(stored.id, False)]
