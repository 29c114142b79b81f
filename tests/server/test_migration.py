"""Moving a gallery to another model: in the background, under concurrent calls, and across restarts.

Models: `a` (16-d, calibrated) and `b` (24-d, other weights). The answer after the switch must equal a
gallery enrolled from scratch with `b` from the same images: the same classes in the same order, the
same distances up to the encoder's batch-to-batch rounding (1e-5; an image embedded alone and in a
batch of four differ in the last float32 bits).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from twinsearch.client import LocalClient
from twinsearch.client.errors import FailedPrecondition
from twinsearch.client.types import MigrationState
from twinsearch.server.engine import _refuse_migration
from twinsearch.server.migration import Migrator
from twinsearch.server.settings import EngineSettings

from .conftest import TIMEOUT, build_model, glyph, png

SETTINGS = EngineSettings(torch_threads=1, batch_wait_ms=0, migration_batch=4)
FIRST = {f"i{n}": (f"class-{n % 12}", png(glyph(n % 12, n))) for n in range(48)}
LATER = {f"j{n}": (f"class-{n % 15}", png(glyph(n % 15, 100 + n))) for n in range(18)}
GONE = ["i1", "i7", "i30", "i47"]  # deleted during the migration: some migrated by then, some not
PROBES = [png(glyph(c, 77)) for c in range(15)]


@pytest.fixture(scope="module")
def model_b(tmp_path_factory):
    path = tmp_path_factory.mktemp("model-b") / "b.tsm"
    build_model(3, dim=24).save(path)
    return path


def enroll(client, gallery: str, items: dict) -> None:
    ids = list(items)
    client.enroll(gallery, [items[i][0] for i in ids], [items[i][1] for i in ids], ids=ids)


def assert_same_answers(got, expected) -> None:
    for g, e in zip(got, expected, strict=True):
        assert [c.label for c in g.candidates] == [c.label for c in e.candidates]
        np.testing.assert_allclose([c.distance for c in g.candidates], [c.distance for c in e.candidates],
                                   rtol=0, atol=1e-5)
        assert g.label == e.label and g.threshold == e.threshold


def from_scratch(tmp_path, model_b, items: dict):
    """Identify answers and class counts of a gallery enrolled with model b alone from `items`."""
    with LocalClient(tmp_path / "scratch", models={"b": model_b}, settings=SETTINGS) as c:
        c.create_gallery("g")
        enroll(c, "g", items)
        return c.identify("g", PROBES, k=5), c.classes("g")


def wait_for_switch(client, gallery: str) -> None:
    assert client.engine.migrator.wait(gallery, TIMEOUT)
    assert client.get_gallery(gallery).migration is None


def test_a_migration_under_concurrent_calls_loses_nothing(tmp_path, model_path, model_b):
    data = tmp_path / "data"
    errors: list[BaseException] = []
    with LocalClient(data, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        c.create_gallery("g", model="a", threshold=0.6, cohort_threshold=0.45)
        enroll(c, "g", FIRST)
        before = c.identify("g", PROBES, k=5)

        # Hold the migration after its first batch, so that the calls below meet it half done.
        store = c.engine.store
        first_batch, release = threading.Event(), threading.Event()
        add_migrated = store.add_migrated

        def held(*args, **kwargs):
            stored = add_migrated(*args, **kwargs)
            first_batch.set()
            assert release.wait(TIMEOUT)
            return stored

        store.add_migrated = held
        start = c.migrate_gallery("g", "b")
        assert start.dropped_threshold == 0.6 and start.dropped_cohort_threshold == 0.45
        assert start.gallery.migration.model == "b"
        assert first_batch.wait(TIMEOUT)
        half = c.get_gallery("g")
        assert half.model == "a" and half.threshold == 0.6 and half.cohort_threshold == 0.45
        assert half.migration.state == MigrationState.RUNNING and 0 < half.migration.done < half.migration.total
        assert c.identify("g", PROBES, k=5) == before  # still the old model's answers

        stop = threading.Event()
        answered = Counter()

        def identify_until_done():
            try:
                while not stop.is_set():
                    for result in c.identify("g", PROBES[:4], k=3):
                        assert result.candidates
                    assert c.get_gallery("g").item_count and c.galleries() and c.classes("g")
                    answered["identify"] += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        readers = [threading.Thread(target=identify_until_done) for _ in range(2)]
        for r in readers:
            r.start()
        try:
            with pytest.raises(FailedPrecondition, match="enroll images, not vectors"):
                c.enroll("g", "x", np.ones(16, dtype=np.float32) / 4.0)
            ids = list(LATER)
            enroll(c, "g", {i: LATER[i] for i in ids[:9]})            # while the migration is held
            assert c.delete("g", client_ids=GONE) == len(GONE)
            # The progress counts what SQLite holds: the deleted items' new vectors went with them.
            progress = c.get_gallery("g").migration
            assert progress.done == store.db.migrated_count(store._gallery("g").id) < progress.total
            release.set()
            enroll(c, "g", {i: LATER[i] for i in ids[9:]})            # while it runs on
            wait_for_switch(c, "g")
        finally:
            release.set()
            stop.set()
            for r in readers:
                r.join(TIMEOUT)
        assert not errors, errors
        assert answered["identify"] > 0
        after = c.get_gallery("g")
        assert (after.model, after.dim, after.threshold, after.cohort_threshold, after.migration) == ("b", 24, None,
                                                                                                     None, None)
        survivors = {k: v for k, v in {**FIRST, **LATER}.items() if k not in GONE}
        assert after.item_count == len(survivors)
        answers, classes = c.identify("g", PROBES, k=5), c.classes("g")
        # Every surviving item is there, with its vector from the new model (some images repeat: glyph
        # variants share shifts, so the nearest may be another item of the very same image).
        for label, image in list(survivors.values())[::3]:
            nearest = c.search("g", image, k=1)[0]
            assert nearest.label == label and nearest.distance < 1e-5 and survivors[nearest.client_id][1] == image
    scratch_answers, scratch_classes = from_scratch(tmp_path, model_b, survivors)
    assert classes == scratch_classes
    assert_same_answers(answers, scratch_answers)
    # And after a restart (from the new snapshot) the same again.
    with LocalClient(data, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        assert c.engine.store.load_report["g"] == "snapshot"
        assert_same_answers(c.identify("g", PROBES, k=5), scratch_answers)


@contextlib.contextmanager
def recorded_migration(data, model_path, model_b, monkeypatch):
    """Gallery "g" of model a with FIRST, its migration to b recorded and not started (yields the client)."""
    with monkeypatch.context() as m:
        m.setattr(Migrator, "start", lambda self, gallery, fingerprint: None)
        with LocalClient(data, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
            c.create_gallery("g", model="a")
            enroll(c, "g", FIRST)
            c.migrate_gallery("g", "b")
            yield c


def test_a_migration_waits_for_its_model_and_resumes_after_a_restart(tmp_path, model_path, model_b, monkeypatch):
    data = tmp_path / "data"
    with recorded_migration(data, model_path, model_b, monkeypatch) as c:
        assert c.migrate_gallery("g", "b").gallery.migration.done == 0  # asking again returns it
        with pytest.raises(FailedPrecondition, match=r"'g' is already bound to model 'a' \(it is moving to "
                                                     r"model 'b', 0 of \d+ items done\)"):
            c.migrate_gallery("g", "a")
        third = SimpleNamespace(name="c", fingerprint="0" * 16)  # a third model, as the registry names it
        with pytest.raises(FailedPrecondition, match=r"'g' is moving to model 'b', 0 of \d+ items done: wait "
                                                     r"for that move to complete before moving it to model 'c'"):
            _refuse_migration(c.engine._named(c.engine.store.get_gallery("g")), third)
    with LocalClient(data, models={"a": model_path}, settings=SETTINGS) as c:  # without the new model
        g = c.get_gallery("g")
        assert g.migration.state == MigrationState.PAUSED and g.migration.model is None
        assert any("'g' is moving to model fingerprint" in note for note in c.engine.startup_notes)
        with pytest.raises(FailedPrecondition, match="already bound to model 'a' .it is moving to model fingerprint "
                                                     ".*, which this server does not hold .restart it with that model"):
            c.migrate_gallery("g", "a")
        assert len(c.identify("g", PROBES, k=3)) == len(PROBES)  # answers with its old model
        with pytest.raises(FailedPrecondition, match="does not hold"):
            enroll(c, "g", {"late": LATER["j0"]})
    with LocalClient(data, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        wait_for_switch(c, "g")
        assert c.get_gallery("g").model == "b"
        answers = c.identify("g", PROBES, k=5)
    assert_same_answers(answers, from_scratch(tmp_path, model_b, FIRST)[0])


def test_the_command_line_migrates_with_a_progress_bar(tmp_path, model_path, model_b, capsys, monkeypatch):
    from twinsearch.client import Client
    from twinsearch.client.cli import main
    from twinsearch.server.app import start_server

    from .conftest import settings_for

    settings = settings_for(tmp_path / "data", None)
    settings = type(settings)(**{**settings.__dict__, "models": (("a", model_path), ("b", model_b))})
    with start_server(settings) as running:
        address = ["--address", running.address]

        def run(*argv):
            status = main([*argv, *address])
            out = capsys.readouterr()
            return status, out.out, out.err

        status, out, _ = run("info")
        assert status == 0 and "a (default)" in out and "b" in out
        assert run("galleries", "create", "g", "--model", "a", "--threshold", "eer")[0] == 0
        assert run("galleries", "create", "plain", "--no-keep-images")[0] == 0
        with Client(running.address, timeout=TIMEOUT) as client:
            enroll(client, "g", FIRST)
            enroll(client, "plain", {"x": FIRST["i0"]})
        first, second = tmp_path / "1.png", tmp_path / "2.png"
        first.write_bytes(PROBES[0])
        second.write_bytes(PROBES[1])
        assert run("enroll", "made-on-b", "x", str(first), "--create", "--model", "b")[0] == 0
        assert running.engine.get_gallery("made-on-b").model == "b"
        status, out, _ = run("verify", str(first), str(second), "--model", "b", "--json")
        expected = running.engine.verify([(PROBES[0], PROBES[1])], model="b")[0]
        assert status == 0 and json.loads(out)["distance"] == expected.distance
        status, out, err = run("galleries", "migrate", "g", "--to", "b")
        assert status == 0, err
        assert "is dropped at the switch" in out and "now answers with model b" in out
        assert "migrate g to b" in err  # the progress bar
        status, out, err = run("galleries", "migrate", "plain", "--to", "b")
        assert status != 0 and "does not keep its images" in err and len(err.strip().splitlines()) == 1
        status, out, err = run("galleries", "migrate", "g", "--to", "nope")
        assert status != 0 and "no model named 'nope'" in err
        status, out, err = run("galleries", "migrate", "g", "--cancel")
        assert status != 0 and "'g' is not moving to another model" in err
        monkeypatch.setattr(running.engine.migrator, "start", lambda gallery, fingerprint: None)  # held at 0 done
        assert run("galleries", "migrate", "made-on-b", "--to", "a", "--no-wait")[0] == 0
        assert running.engine.get_gallery("made-on-b").migration.done == 0
        from twinsearch.client.commands import galleries

        def interrupted(seconds):
            raise KeyboardInterrupt

        with monkeypatch.context() as m:  # Ctrl-C while following it: it goes on, and the way to stop it is named
            m.setattr(galleries, "time", SimpleNamespace(sleep=interrupted, monotonic=galleries.time.monotonic))
            status, out, err = run("galleries", "migrate", "made-on-b", "--to", "a")
        assert status == 130 and "the migration goes on in the server" in err
        assert "twinsearch galleries migrate made-on-b --cancel" in err
        assert running.engine.get_gallery("made-on-b").migration is not None
        status, out, err = run("galleries", "migrate", "made-on-b", "--cancel")
        assert status == 0, err
        assert "migration cancelled; it answers with model b as before" in out
        assert running.engine.get_gallery("made-on-b").migration is None


def test_an_item_deleted_while_its_image_is_being_read_is_skipped(tmp_path, model_path, model_b):
    with LocalClient(tmp_path / "data", models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        c.create_gallery("g", model="a")
        items = {f"k{n}": (f"class-{n}", png(glyph(20 + n))) for n in range(8)}  # eight distinct images
        enroll(c, "g", items)
        store = c.engine.store
        listed = store.migration_todo

        def then_deleted(name, limit):
            todo = listed(name, limit)
            if todo and c.get_gallery("g").migration.done == 0:
                c.delete("g", ids=[todo[0][0]])  # listed, then deleted with its image before it is read
            return todo

        store.migration_todo = then_deleted
        c.migrate_gallery("g", "b")
        wait_for_switch(c, "g")
        g = c.get_gallery("g")
        assert (g.model, g.item_count) == ("b", 7)


def test_an_unreadable_kept_image_stops_the_migration_and_migrating_again_retries(tmp_path, model_path, model_b):
    import hashlib

    from twinsearch.server import images as kept

    data = tmp_path / "data"
    with LocalClient(data, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        c.create_gallery("g", model="a")
        items = {f"k{n}": (f"class-{n}", png(glyph(40 + n))) for n in range(6)}
        enroll(c, "g", items)
        lost = hashlib.sha256(items["k3"][1]).hexdigest()
        db = c.engine.store.db
        with db.transaction() as conn:  # the disk lost it
            (saved,) = conn.execute("SELECT data FROM images WHERE key = ?", (lost,)).fetchone()
            conn.execute("DELETE FROM images WHERE key = ?", (lost,))
        c.migrate_gallery("g", "b")
        assert c.engine.migrator.wait("g", TIMEOUT)
        m = c.get_gallery("g").migration
        assert m.state == MigrationState.FAILED and "its kept image cannot be read" in m.error
        # The gallery goes on with its old model, enrollments included.
        assert c.get_gallery("g").model == "a" and len(c.identify("g", PROBES[:2])) == 2
        enroll(c, "g", {"k9": ("class-9", png(glyph(49)))})
        with db.transaction() as conn:
            conn.execute("INSERT INTO images (key, data) VALUES (?, ?)", (lost, saved))
        assert kept.decode(c.engine.store.kept_image(lost)) == saved
        c.migrate_gallery("g", "b")  # starts over
        wait_for_switch(c, "g")
        assert (c.get_gallery("g").model, c.get_gallery("g").item_count) == ("b", 7)


def test_a_cancelled_migration_leaves_the_gallery_as_it_was(tmp_path, model_path, model_b):
    from twinsearch.client.errors import NotFound

    data = tmp_path / "data"
    with LocalClient(data, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        c.create_gallery("g", model="a", threshold=0.6, cohort_threshold=0.45)
        enroll(c, "g", FIRST)
        before = c.identify("g", PROBES, k=5)
        store = c.engine.store
        add_migrated, batches = store.add_migrated, []
        second_batch, release = threading.Event(), threading.Event()

        def held(*args, **kwargs):  # the second batch waits, embedded, until the cancel is committed
            batches.append(len(args[2]))
            if len(batches) == 2:
                second_batch.set()
                assert release.wait(TIMEOUT)
            return add_migrated(*args, **kwargs)

        store.add_migrated = held
        c.migrate_gallery("g", "b")
        assert second_batch.wait(TIMEOUT)
        assert store.db.migrated_count(store._gallery("g").id) == SETTINGS.migration_batch
        threading.Timer(0.2, release.set).start()  # after the cancel below has committed
        cancelled = c.cancel_migration("g")
        assert not c.engine.migrator.running("g")  # the answer came once its thread had ended
        assert len(batches) == 2  # the held batch was refused, and nothing came after it
        assert (cancelled.model, cancelled.dim, cancelled.threshold, cancelled.cohort_threshold,
                cancelled.migration) == ("a", 16, 0.6, 0.45, None)
        assert store.db.migrated_count(store._gallery("g").id) == 0 and not store.db.migrations()
        assert c.identify("g", PROBES, k=5) == before
        c.enroll("g", "x", np.ones(16, dtype=np.float32) / 4.0)  # vectors again: nothing else to embed them for
        with pytest.raises(FailedPrecondition, match="'g' is not moving to another model"):
            c.cancel_migration("g")
        with pytest.raises(NotFound):
            c.cancel_migration("nope")
    with LocalClient(data, models={"a": model_path, "b": model_b}, settings=SETTINGS) as c:
        g = c.get_gallery("g")
        assert (g.model, g.migration, g.item_count) == ("a", None, len(FIRST) + 1)
        assert not c.engine.startup_notes
        assert c.delete("g", label="x") == 1  # the vector-enrolled item: a migration needs kept images
        c.migrate_gallery("g", "b")  # starts afresh, and ends as if never cancelled
        wait_for_switch(c, "g")
        answers = c.identify("g", PROBES, k=5)
    assert_same_answers(answers, from_scratch(tmp_path, model_b, FIRST)[0])


def test_a_migration_waiting_for_a_model_the_server_no_longer_has_can_be_cancelled(tmp_path, model_path, model_b,
                                                                                  monkeypatch):
    data = tmp_path / "data"
    with recorded_migration(data, model_path, model_b, monkeypatch) as c:
        assert c.get_gallery("g").migration.model == "b"
    with LocalClient(data, models={"a": model_path}, settings=SETTINGS) as c:  # model b is gone for good
        assert c.get_gallery("g").migration.state == MigrationState.PAUSED
        with pytest.raises(FailedPrecondition, match="does not hold"):
            enroll(c, "g", {"late": LATER["j0"]})
        assert c.cancel_migration("g").migration is None
        enroll(c, "g", {"late": LATER["j0"]})
        assert c.get_gallery("g").item_count == len(FIRST) + 1
