"""`twinsearch backup`: a copy of a data folder taken while it is served holds exactly what was committed
when the copy began, serves the same answers, and an interrupted backup leaves nothing behind."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from twinsearch.client import LocalClient
from twinsearch.server import backup as backups
from twinsearch.server.settings import EngineSettings

from .conftest import glyph, png

SETTINGS = EngineSettings(torch_threads=1, batch_wait_ms=0)
IMAGES = {f"i{n}": (f"class-{n % 6}", png(glyph(n % 6, n))) for n in range(24)}
LATE = png(glyph(0, 77))
PROBES = [png(glyph(c, 50)) for c in range(6)] + [LATE]


def enroll(client, gallery: str, items: dict) -> None:
    ids = list(items)
    client.enroll(gallery, [items[i][0] for i in ids], [items[i][1] for i in ids], ids=ids)


def test_a_backup_of_a_served_folder_holds_what_was_committed_and_answers_the_same(tmp_path, model_path):
    data, copy, second = tmp_path / "data", tmp_path / "copy", tmp_path / "second"
    with LocalClient(data, model=model_path, settings=SETTINGS) as c:
        c.create_gallery("g", threshold=0.7)
        c.create_gallery("ivf", index="ivf", params={"nlist": 2, "nprobe": 2})
        enroll(c, "g", IMAGES)
        enroll(c, "ivf", dict(list(IMAGES.items())[:10]))
    with LocalClient(data, model=model_path, settings=SETTINGS) as c:  # served, with the snapshots of its close
        answers = c.identify("g", PROBES, k=3)
        enroll(c, "g", {"late-0": ("class-0", LATE)})  # committed, not yet in any snapshot
        answers_late = c.identify("g", PROBES, k=3)
        report = backups.backup(data, copy)
        enroll(c, "g", {"after": ("class-1", png(glyph(1, 88)))})  # after the copy: not in it
        c.delete("g", client_ids=["i0"])
        fingerprint = c.get_gallery("g").model_fingerprint
        second_report = backups.backup(data, second)  # the same folder again, with changes since
    assert [(g.name, g.items, g.fingerprint) for g in report.galleries] == [("g", 25, fingerprint),
                                                                         ("ivf", 10, fingerprint)]
    assert report.snapshots_copied == 2 and report.snapshots_left_out == [] and report.items == 35
    assert sorted(p.name for p in copy.iterdir()) == ["gallery.sqlite3", "snapshots"]
    assert not list(tmp_path.glob(".copy.partial-*"))
    assert answers_late != answers  # the late item shows in the answers the copy must give
    with LocalClient(copy, model=model_path, settings=SETTINGS) as c:
        assert c.engine.store.load_report == {"g": "caught up", "ivf": "snapshot"}
        g = c.get_gallery("g")
        assert (g.item_count, g.threshold) == (25, 0.7)
        assert c.identify("g", PROBES, k=3) == answers_late
        assert c.find_items("g", ["after", "i0", "late-0"])[0].client_id == "i0"
        assert [e.client_id for e in c.find_items("g", ["after", "i0", "late-0"])] == ["i0", "late-0"]
    assert [g.items for g in second_report.galleries] == [25, 10]  # one added, one deleted


def served_gallery(data, model_path) -> list:
    """A data folder with gallery "g" and its snapshot (written at close); the answers to PROBES."""
    with LocalClient(data, model=model_path, settings=SETTINGS) as c:
        c.create_gallery("g")
        enroll(c, "g", IMAGES)
        return c.identify("g", PROBES, k=3)


def index_copies_fail(monkeypatch, times: int) -> list:
    """The first `times` copies of an index file fail as if the server had replaced the snapshot and removed
    that file meanwhile; the list of index copies tried, filled as they are."""
    copy_file, tries = backups.shutil.copy2, []

    def copy2(src, dst):
        if str(src).endswith(".faiss"):
            tries.append(src)
            if len(tries) <= times:
                raise FileNotFoundError(src)
        return copy_file(src, dst)

    monkeypatch.setattr(backups.shutil, "copy2", copy2)
    return tries


def test_a_snapshot_replaced_while_it_is_copied_is_left_out_and_rebuilt(tmp_path, model_path, monkeypatch):
    data, copy = tmp_path / "data", tmp_path / "copy"
    answers = served_gallery(data, model_path)
    index_copies_fail(monkeypatch, times=backups.SNAPSHOT_TRIES)
    report = backups.backup(data, copy)
    assert report.snapshots_copied == 0 and report.snapshots_left_out == ["g1.state.npz"]
    assert list((copy / "snapshots").iterdir()) == []
    with LocalClient(copy, model=model_path, settings=SETTINGS) as c:
        assert c.engine.store.load_report == {"g": "rebuilt"}
        assert c.identify("g", PROBES, k=3) == answers


def test_a_snapshot_replaced_once_while_it_is_copied_is_copied_again(tmp_path, model_path, monkeypatch):
    data, copy = tmp_path / "data", tmp_path / "copy"
    answers = served_gallery(data, model_path)
    tries = index_copies_fail(monkeypatch, times=1)
    report = backups.backup(data, copy)
    assert len(tries) == 2 and report.snapshots_copied == 1 and report.snapshots_left_out == []
    with LocalClient(copy, model=model_path, settings=SETTINGS) as c:
        assert c.engine.store.load_report == {"g": "snapshot"}
        assert c.identify("g", PROBES, k=3) == answers


def test_an_interrupted_backup_leaves_nothing_and_the_source_untouched(tmp_path, model_path, monkeypatch):
    data, copy = tmp_path / "data", tmp_path / "copy"
    with LocalClient(data, model=model_path, settings=SETTINGS) as c:
        c.create_gallery("g")
        enroll(c, "g", IMAGES)
    before = {p.name: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    def interrupted(database, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(backups, "_copy_database", interrupted)
    with pytest.raises(KeyboardInterrupt):
        backups.backup(data, copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert {p.name: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_backup_refuses_a_source_without_a_store_and_a_destination_in_the_way(tmp_path, model_path):
    data = tmp_path / "data"
    with LocalClient(data, model=model_path, settings=SETTINGS) as c:
        c.create_gallery("g")
    with pytest.raises(ValueError, match="holds no gallery store"):
        backups.backup(tmp_path / "elsewhere", tmp_path / "copy")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not an empty folder"):
        backups.backup(data, tmp_path / "full")
    with pytest.raises(ValueError, match="inside the data folder"):
        backups.backup(data, data / "copy")
    (tmp_path / "empty").mkdir()
    assert backups.backup(data, tmp_path / "empty").galleries[0].name == "g"  # an empty folder is fine
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_a_copy_that_fails_its_integrity_check_is_refused(tmp_path, model_path, monkeypatch):
    data = tmp_path / "data"
    with LocalClient(data, model=model_path, settings=SETTINGS) as c:
        c.create_gallery("g")

    monkeypatch.setattr(backups, "_integrity", lambda conn: "row 3 missing from index")  # as SQLite reports damage
    with pytest.raises(sqlite3.DatabaseError, match="fails SQLite's integrity check: row 3 missing"):
        backups.backup(data, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_the_backup_command(tmp_path, model_path, capsys):
    from twinsearch.client.cli import main

    data = tmp_path / "data"
    with LocalClient(data, model=model_path, settings=SETTINGS) as c:
        c.create_gallery("g")
        enroll(c, "g", IMAGES)
        fingerprint = c.get_gallery("g").model_fingerprint
        assert main(["backup", str(data), str(tmp_path / "copy")]) == 0  # while served
    out = capsys.readouterr().out
    assert "backed up 1 gallery, 24 items" in out and fingerprint in out
    assert f"twinsearch serve --data-dir {tmp_path / 'copy'}" in out
    assert main(["backup", str(data), str(tmp_path / "copy2"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["galleries"] == [{"name": "g", "fingerprint": fingerprint, "items": 24}]
    assert main(["backup", str(data), str(tmp_path / "copy")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("twinsearch backup: ") and "is not an empty folder" in err and len(err.splitlines()) == 1
    assert np.isfinite(summary["seconds"])


def test_a_backup_taken_during_enrollments_holds_a_prefix_of_them(tmp_path, model_path):
    import threading

    from .conftest import unit

    data, copy = tmp_path / "data", tmp_path / "copy"
    rng = np.random.default_rng(0)
    with LocalClient(data, model=model_path, settings=SETTINGS) as c:
        c.create_gallery("v")
        dim = c.info().model.dim
        acknowledged, stop = [], threading.Event()

        def enroll_until_stopped():
            n = 0
            while not stop.is_set():
                c.enroll("v", [f"c{n % 7}"] * 20, unit(rng.normal(size=(20, dim)).astype(np.float32)),
                         ids=[f"b{n}-{j}" for j in range(20)])
                acknowledged.append(20)
                n += 1

        writer = threading.Thread(target=enroll_until_stopped)
        writer.start()
        try:
            while len(acknowledged) < 5:
                stop.wait(0.01)
            before = sum(acknowledged)
            report = backups.backup(data, copy)
            after = sum(acknowledged)
        finally:
            stop.set()
            writer.join()
    (held,) = [g.items for g in report.galleries]
    assert before <= held <= after + 20 and held % 20 == 0  # whole batches, none acknowledged before missing
    with LocalClient(copy, model=model_path, settings=SETTINGS) as c:
        assert c.get_gallery("v").item_count == held
        found = c.find_items("v", [f"b{n}-{j}" for n in range(held // 20) for j in range(20)])
        assert len(found) == held  # and they are the first ones enrolled
