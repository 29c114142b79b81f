"""Verify, Search, Identify and VerifyClass report the very same distance for the same two embeddings.

Through the engine (the core every transport calls): Verify computes a pair directly, the gallery
queries through FAISS and then recompute exactly; the numbers must agree bit for bit, in batches
large enough for FAISS's BLAS path, and an input against its own enrolled copy must give 0.0.
"""

from __future__ import annotations

import numpy as np

from twinsearch.client.types import Scoring
from twinsearch.server.engine import EnrollItem

from .conftest import DIM, glyph, png, unit


def test_every_rpc_reports_the_verify_distance(vector_engine):
    rng = np.random.default_rng(5)
    v = unit(rng.normal(size=(40, DIM)))
    vector_engine.create_gallery("g")
    stored = vector_engine.enroll("g", [EnrollItem(f"c{i:02d}", v[i]) for i in range(40)]).stored
    probes = unit(np.concatenate([v[:30] + 0.3 * rng.normal(size=(30, DIM)), rng.normal(size=(70, DIM))]))
    probes[:5] = v[:5]  # enrolled vectors themselves; 100 probes: FAISS's BLAS path
    pairs = [(i, j) for i in range(0, 100, 3) for j in (0, 4, 17, 39)]
    verify = {(i, j): r.distance for (i, j), r in
              zip(pairs, vector_engine.verify([(probes[i], v[j]) for i, j in pairs]), strict=True)}
    search = vector_engine.search("g", list(probes), k=40)
    ident = vector_engine.identify("g", list(probes), k=40, scoring=Scoring.NEAREST, threshold=0.5)
    claims = vector_engine.verify_class("g", [(probes[i], f"c{j:02d}") for i, j in pairs], scoring=Scoring.NEAREST,
                                 threshold=0.5)
    for (i, j), claim in zip(pairs, claims, strict=True):
        by_id = {n.id: n.distance for n in search[i]}
        by_label = {c.label: c.distance for c in ident[i].candidates}
        assert by_id[stored[j].id] == by_label[f"c{j:02d}"] == claim.distance == verify[i, j], (i, j)
    for i in range(5):
        assert search[i][0].id == stored[i].id and search[i][0].distance == 0.0
        assert ident[i].candidates[0].distance == 0.0 and ident[i].label == f"c{i:02d}"
        assert verify.get((i, i), 0.0) == 0.0


def test_an_image_against_its_own_enrolled_copy_is_at_zero(vector_engine):
    vector_engine.create_gallery("g")
    images = [png(glyph(c)) for c in range(6)]
    for c, im in enumerate(images):  # one at a time: embedded alone, as the queries below are
        vector_engine.enroll("g", [EnrollItem(f"c{c}", im)])
    for c in (0, 3, 5):
        (hit,) = vector_engine.search("g", [images[c]], k=1)[0]
        (ident,) = vector_engine.identify("g", [images[c]], k=2, threshold=0.5)
        (claim,) = vector_engine.verify_class("g", [(images[c], f"c{c}")], threshold=0.5)
        assert hit.distance == 0.0 and hit.label == f"c{c}"
        assert ident.candidates[0].distance == 0.0 and ident.label == f"c{c}"
        assert claim.distance == 0.0 and claim.same
    (pair,) = vector_engine.verify([(images[2], images[2])], threshold=0.5)
    assert pair.distance == 0.0 and pair.same
