"""A model whose embeddings carry a class posterior (heads.ClassPosterior) serves like any other: the
server indexes the card's full dimension and reports exact distances."""

from __future__ import annotations

import numpy as np
import torch

from twinsearch.encoder.heads import build_net
from twinsearch.encoder.model import EncoderModel
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.server.engine import Engine, EnrollItem
from twinsearch.server.settings import EngineSettings

from .conftest import DIM, SIDE, glyph, png

CLASSES = 5


def test_engine_serves_a_model_with_a_class_posterior(tmp_path):
    torch.manual_seed(3)
    arch = {"backbone": "conv4", "backbone_args": {"in_channels": 1, "widths": [8, 8], "input_size": SIDE},
            "dim": DIM, "head_args": {}, "posterior": {"classes": CLASSES, "weight": 0.75, "temperature": 8.0}}
    net = build_net(arch)
    net.posterior.proxies.copy_(torch.randn(CLASSES, DIM))
    path = tmp_path / "posterior.tsm"
    EncoderModel.create(net, arch, Preprocess(width=SIDE, height=SIDE, channels=1, invert=True), "post").save(path)
    images = [png(glyph(c)) for c in range(4)]
    with Engine.open(tmp_path / "data", path, EngineSettings(torch_threads=1, batch_wait_ms=0)) as engine:
        assert engine.model_info().dim == DIM + CLASSES
        engine.create_gallery("g")
        for c, im in enumerate(images):  # one at a time: embedded alone, as the queries below are
            engine.enroll("g", [EnrollItem(f"c{c}", im)])
        vectors = engine.embed(images)
        assert vectors.shape == (4, DIM + CLASSES)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        for c in range(4):
            (ident,) = engine.identify("g", [images[c]], k=2, threshold=0.5)
            assert ident.label == f"c{c}" and ident.candidates[0].distance == 0.0
        (pair,) = engine.verify([(images[0], images[1])], threshold=0.5)
        expected = float(np.linalg.norm(vectors[0].astype(np.float64) - vectors[1].astype(np.float64)))
        assert abs(pair.distance - expected) < 1e-6
