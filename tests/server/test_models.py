"""Several models in one server: each gallery bound to one by name, answers equal to single-model servers.

Models: `a` (the tiny calibrated model, 16-d) and `b` (other weights, 24-d, another calibration).
The same scenario runs on an engine holding both and on engines holding one each; the answers must be
equal, so that a second model changes nothing about the first one's galleries.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from twinsearch.client import Client, LocalClient
from twinsearch.client.errors import FailedPrecondition, InvalidArgument
from twinsearch.server.app import start_server
from twinsearch.server.commands.serve import settings_from
from twinsearch.server.models import parse_model_option
from twinsearch.server.settings import EngineSettings
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc

from .conftest import TIMEOUT, build_model, glyph, png, serve_and_stop, settings_for

SETTINGS = EngineSettings(torch_threads=1, batch_wait_ms=0)
CLASSES = 6
IMAGES = [png(glyph(c, v)) for c in range(CLASSES) for v in range(3)]
LABELS = [f"class-{c}" for c in range(CLASSES) for _ in range(3)]
PROBES = [png(glyph(c, 7)) for c in range(CLASSES)]


@pytest.fixture(scope="module")
def model_b(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model-b") / "b.tsm"
    build_model(3, dim=24).save(path)
    return path


def without_ids(results):
    """Identify and search answers with stored ids left out: ids count over all galleries of a store."""
    out = []
    for r in results:
        if isinstance(r, list):
            out.append([replace(n, id=0) for n in r])
        else:
            out.append(replace(r, candidates=tuple(replace(c, nearest_ids=()) for c in r.candidates)))
    return out


def scenario(client, gallery: str, model: str | None) -> dict:
    """Create, enroll, query: everything a caller sees, with the stored ids left out where they differ."""
    kw = {"model": model} if model else {}
    info = client.create_gallery(gallery, **kw)
    client.enroll(gallery, LABELS, IMAGES, ids=[f"i{n}" for n in range(len(IMAGES))])
    return {
        "dim": info.dim, "fingerprint": info.model_fingerprint,
        "identify": without_ids(client.identify(gallery, PROBES, k=3)),
        "search": without_ids(client.search(gallery, PROBES[:2], k=4)),
        "verify_class": client.verify_class(gallery, PROBES, LABELS[::3]),
        "embed": client.embed(PROBES, **kw).tolist(),
        "verify": client.verify(PROBES[:3], PROBES[3:], **kw),
    }


def test_two_models_answer_as_two_single_model_servers(tmp_path, model_path, model_b):
    with LocalClient(tmp_path / "both", models={"a": model_path, "b": model_b}, settings=SETTINGS) as both:
        info = both.info()
        assert [m.name for m in info.models] == ["a", "b"] and info.model.name == "a"
        assert [m.dim for m in info.models] == [16, 24]
        on_a = scenario(both, "ga", "a")
        on_b = scenario(both, "gb", "b")
        on_default = scenario(both, "gd", None)
        assert both.get_gallery("gb").model == "b" and both.get_gallery("gd").model == "a"
    with LocalClient(tmp_path / "a", models=[("a", model_path)], settings=SETTINGS) as alone:
        assert scenario(alone, "ga", None) == on_a == on_default
    with LocalClient(tmp_path / "b", models=[("b", model_b)], settings=SETTINGS) as alone:
        assert scenario(alone, "gb", None) == on_b
    assert on_b["dim"] == 24 and np.shape(on_b["embed"]) == (CLASSES, 24)
    assert on_a["fingerprint"] != on_b["fingerprint"]
    # The models really differ: a gallery on b does not answer as one on a would.
    assert on_a["verify"] != on_b["verify"]


def test_unknown_model_names_are_invalid_arguments(tmp_path, model_path, model_b):
    with LocalClient(tmp_path, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        for call in (lambda: c.create_gallery("g", model="nope"), lambda: c.embed(PROBES[0], model="nope"),
                     lambda: c.verify(PROBES[0], PROBES[1], model="nope"),
                     lambda: c.operating_point("eer", model="nope")):
            with pytest.raises(InvalidArgument, match="no model named 'nope'"):
                call()
        c.create_gallery("g", model="a", keep_images=True)
        with pytest.raises(InvalidArgument, match="no model named 'nope'"):
            c.migrate_gallery("g", "nope")


def test_a_gallery_whose_model_is_not_held_says_what_to_do(tmp_path, model_path, model_b):
    data = tmp_path / "data"
    with LocalClient(data, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        c.create_gallery("on-b", model="b")
        c.enroll("on-b", LABELS[:3], IMAGES[:3])
        fingerprint = c.get_gallery("on-b").model_fingerprint
        c.create_gallery("on-a", model="a")
        c.enroll("on-a", LABELS[:3], IMAGES[:3])
    with LocalClient(data, models={"a": model_path}, settings=SETTINGS) as c:
        notes = c.engine.startup_notes
        assert len(notes) == 1 and "'on-b'" in notes[0] and fingerprint in notes[0]
        assert "--model NAME=PATH" in notes[0] and "galleries migrate" in notes[0]
        assert c.get_gallery("on-b").model is None
        for call in (lambda: c.identify("on-b", PROBES[0]), lambda: c.enroll("on-b", "x", IMAGES[0]),
                     lambda: c.search("on-b", PROBES[0]), lambda: c.verify_class("on-b", PROBES[0], LABELS[0])):
            with pytest.raises(FailedPrecondition) as err:
                call()
            assert err.value.details == notes[0]
        # The gallery on the model still held answers as before.
        assert c.identify("on-a", IMAGES[0]).candidates[0].distance < 1e-5


def test_serve_says_once_which_gallery_it_cannot_serve(tmp_path, model_path, model_b):
    data = tmp_path / "data"
    with LocalClient(data, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        c.create_gallery("on-b", model="b")
    # Three lines: serving on, the start-up line, the warning.
    lines, out, err, _ = serve_and_stop(["serve", "--model", f"a={model_path}", "--data-dir", str(data),
                                         "--address", "127.0.0.1:0", "--torch-threads", "1"], 3)
    assert lines[2].startswith("twinsearch warning: gallery 'on-b'"), lines
    assert ("".join(lines) + out + err).count("'on-b'") == 1, err  # printed, not logged as well


def test_model_options_of_serve(tmp_path, model_path, model_b):
    import argparse

    from twinsearch.server.commands.serve import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parse_model_option("chars=/m/a.tsm") == ("chars", "/m/a.tsm")
    assert parse_model_option("/m/a=b.tsm") == (None, "/m/a=b.tsm")
    one = settings_from(parser.parse_args(["--model", str(model_path)]), {})
    assert one.model_path == model_path and one.models == ()
    two = settings_from(parser.parse_args(["--model", f"a={model_path}", "--model", str(model_b)]), {})
    assert two.models == ((("a", model_path)), (None, model_b))
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "first.tsm").write_bytes(model_path.read_bytes())
    (folder / "second.tsm").write_bytes(model_b.read_bytes())
    (folder / "notes.txt").write_text("not a model")
    listed = settings_from(parser.parse_args(["--models", str(folder)]), {})
    assert listed.models == (("first", folder / "first.tsm"), ("second", folder / "second.tsm"))
    with pytest.raises(ValueError, match="no model files"):
        settings_from(parser.parse_args(["--models", str(tmp_path)]), {})
    (folder / "my model.tsm").write_bytes(model_path.read_bytes())
    with pytest.raises(ValueError, match="'my model.tsm' cannot name a model .*: rename the file"):
        settings_from(parser.parse_args(["--models", str(folder)]), {})


def test_the_same_model_twice_is_refused(tmp_path, model_path):
    with pytest.raises(ValueError, match="same model"):
        LocalClient(tmp_path, models=[("a", model_path), ("b", model_path)], settings=SETTINGS)


def test_models_that_cannot_be_served_together_are_refused_before_any_loads(tmp_path, model_path, model_b,
                                                                            monkeypatch):
    from twinsearch.encoder import model as encoder_model
    from twinsearch.server.models import load_models

    loaded = []
    monkeypatch.setattr(encoder_model, "load_model", lambda *a, **k: loaded.append(a) or pytest.fail("loaded"))
    with pytest.raises(ValueError, match="two models are named 'x'"):
        load_models([("x", model_path), ("x", model_b)])
    with pytest.raises(ValueError, match="are the same model"):
        load_models([(None, model_path), ("other", model_path)])
    with pytest.raises(ValueError, match="model name 'a b'"):
        load_models([("a b", model_path)])
    assert loaded == []


def test_over_grpc_fields_are_optional_for_old_clients(tmp_path, model_path, model_b):
    settings = settings_for(tmp_path / "data", model_path)
    settings = type(settings)(**{**settings.__dict__, "model_path": None,
                                 "models": (("a", model_path), ("b", model_b))})
    with start_server(settings) as running, Client(running.address, timeout=TIMEOUT) as client:
        assert [m.name for m in client.info().models] == ["a", "b"]
        on_b = client.create_gallery("gb", model="b", keep_images=False)
        assert (on_b.model, on_b.dim, on_b.keep_images) == ("b", 24, False)
        client.enroll("gb", LABELS, IMAGES)
        vectors = client.embed(PROBES, model="b")
        assert np.array_equal(vectors, running.engine.embed(PROBES, model="b"))
        with grpc.insecure_channel(running.address) as channel:
            stub = twinsearch_pb2_grpc.TwinSearchStub(channel)
            # A request without the new fields: the default model, a gallery that keeps its images.
            made = stub.CreateGallery(pb.CreateGalleryRequest(name="old"), timeout=TIMEOUT)
            assert (made.model, made.dim, made.keep_images) == ("a", 16, True)
            answer = stub.Embed(pb.EmbedRequest(images=[pb.Image(encoded=PROBES[0])]), timeout=TIMEOUT)
            assert answer.model_fingerprint == client.info().model.fingerprint and answer.vectors[0].dim == 16
            with pytest.raises(grpc.RpcError) as err:
                stub.Embed(pb.EmbedRequest(images=[pb.Image(encoded=PROBES[0])], model="nope"), timeout=TIMEOUT)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_each_model_is_warmed_up_before_the_server_takes_calls(model_path, model_b, monkeypatch):
    """A blank image of the model's input size goes through decoding and the forward pass alone and as a
    pair while the models load, so that the first call does not pay for the first passes."""
    from twinsearch.encoder.model import EncoderModel
    from twinsearch.server.models import load_models

    seen = []
    embed = EncoderModel.embed
    monkeypatch.setattr(EncoderModel, "embed", lambda self, images, *a, **kw: seen.append(
        (self.name, [len(b) for b in images])) or embed(self, images, *a, **kw))
    registry = load_models([("a", model_path), ("b", model_b)])
    assert registry.names() == ["a", "b"]
    assert [len(sizes) for _, sizes in seen] == [1, 2, 1, 2]
    assert all(isinstance(n, int) and n > 0 for _, sizes in seen for n in sizes)
