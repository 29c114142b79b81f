"""SIGKILL during a migration to another model: the restarted server resumes it and ends where a gallery
enrolled from scratch with the new model would be.

A `twinsearch serve` with two models (`a` and `b`, both 16-d: the same dimension, so that only the
fingerprint tells their vectors apart) holds a gallery of glyph images on `a`. It is moved to `b`
with small migration batches, and the server is killed with SIGKILL while the migration is part done,
twice (each restart resumes from what SQLite holds). After the last restart the migration completes;
the gallery then answers as a store built from scratch with `b` from the same images, keeps exactly
one kept image per distinct image, and answers the same again after a clean restart.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from twinsearch.client import Client, LocalClient
from twinsearch.client.server_process import ServerProcess

from .conftest import assert_same_candidates, build_model, glyph_png

ITEMS = 240
CLASSES = 20
KILLS = 2
TIMEOUT = 60.0
IMAGES = {f"item-{i}": (f"class-{i % CLASSES}", glyph_png(i)) for i in range(ITEMS)}
PROBES = [glyph_png(10_000 + c) for c in range(8)] + [IMAGES[f"item-{i}"][1] for i in range(0, ITEMS, 30)]
ROOT = Path(__file__).resolve().parents[2]
# The server runs this checkout's code, whatever is installed.
CODE = {"PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("proto", "encoder", "server", "client"))}


def serve(data, model_a, model_b) -> ServerProcess:
    return ServerProcess.start(data, None, timeout_s=120.0, env=CODE, flags=(
        "--model", f"a={model_a}", "--model", f"b={model_b}", "--torch-threads", "1", "--migration-batch", "4"))


def kill_mid_migration(server: ServerProcess) -> int:
    """Poll the migration and SIGKILL the server once it is part done; returns the items done then."""
    with Client(server.address, timeout=TIMEOUT) as client:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            m = client.get_gallery("g").migration
            assert m is not None, "the migration completed before the server could be killed"
            if m.done >= 8:
                break
            time.sleep(0.005)
    server.kill()
    return m.done


@pytest.mark.slow
def test_sigkill_during_a_migration_resumes_and_completes(tmp_path, model_file):
    model_b = build_model(tmp_path / "b.tsm", seed=1)
    data = tmp_path / "data"
    server = serve(data, model_file, model_b)
    try:
        with Client(server.address, timeout=TIMEOUT) as client:
            client.create_gallery("g", model="a")
            ids = list(IMAGES)
            for s in range(0, ITEMS, 60):
                part = ids[s:s + 60]
                client.enroll("g", [IMAGES[i][0] for i in part], [IMAGES[i][1] for i in part], ids=part)
            client.migrate_gallery("g", "b")
        done = []
        for _ in range(KILLS):
            done.append(kill_mid_migration(server))
            server = serve(data, model_file, model_b)  # resumes the migration
        with Client(server.address, timeout=TIMEOUT) as client:
            deadline = time.monotonic() + TIMEOUT
            while client.get_gallery("g").migration is not None:
                assert time.monotonic() < deadline, "the resumed migration did not complete"
                time.sleep(0.05)
            g = client.get_gallery("g")
            assert (g.model, g.item_count, g.class_count) == ("b", ITEMS, CLASSES)
            got = client.identify("g", PROBES, k=5)
            got_classes = client.classes("g")
    finally:
        server.stop()
    assert done[-1] < ITEMS and all(d >= 8 for d in done)
    with LocalClient(tmp_path / "scratch", models={"b": model_b}) as fresh:
        fresh.create_gallery("g")
        ids = list(IMAGES)
        fresh.enroll("g", [IMAGES[i][0] for i in ids], [IMAGES[i][1] for i in ids], ids=ids)
        expected = fresh.identify("g", PROBES, k=5)
        assert got_classes == fresh.classes("g")
    assert_same_candidates(got, expected)
    conn = sqlite3.connect(data / "gallery.sqlite3")
    (kept_count,) = conn.execute("SELECT count(*) FROM images").fetchone()
    conn.close()
    assert kept_count == len({image for _, image in IMAGES.values()})
    server = serve(data, model_file, model_b)  # and a clean restart keeps it
    try:
        with Client(server.address, timeout=TIMEOUT) as client:
            assert client.get_gallery("g").model == "b"
            assert_same_candidates(client.identify("g", PROBES, k=5), expected)
    finally:
        server.stop()
