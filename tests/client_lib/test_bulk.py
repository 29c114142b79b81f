"""Bulk indexing of a folder tree: walking, streamed batches, failures reported, resumption."""

import os
import socket
import threading

import pytest

from twinsearch.client import Client, InvalidArgument, NotFound
from twinsearch.client.bulk import walk_folder

CLASSES = {"alice": 5, "bob": 5, "carol": 5}


@pytest.fixture
def tree(tmp_path, png):
    """15 good images in 3 class folders, plus a broken image, an empty one, a dangling link, a stray
    file outside any class folder, a text file and a hidden file (both ignored)."""
    root = tmp_path / "photos"
    seed = 0
    for label, n in CLASSES.items():
        (root / label / "sub").mkdir(parents=True)
        for i in range(n):
            seed += 1
            folder = root / label / ("sub" if i == 0 else "")
            (folder / f"{i}.png").write_bytes(png(seed))
    (root / "bob" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "bob" / "empty.jpg").write_bytes(b"")
    os.symlink(root / "nowhere.png", root / "carol" / "dangling.png")
    (root / "stray.png").write_bytes(png(99))
    (root / "alice" / "notes.txt").write_text("not an image")
    (root / "alice" / ".hidden.png").write_bytes(png(98))
    return root


def test_walk_folder(tree):
    entries, outside = walk_folder(tree)
    assert len(entries) == 18
    assert {e.label for e in entries} == set(CLASSES)
    assert "alice/sub/0.png" in {e.relative for e in entries}
    assert [f.path for f in outside] == ["stray.png"]
    assert entries == walk_folder(tree)[0]  # a stable order: the ids of a re-run are the same
    deep, outside_deep = walk_folder(tree, class_depth=2)
    assert {e.label for e in deep} == {"alice/sub", "bob/sub", "carol/sub"}
    assert len(outside_deep) == 16
    with pytest.raises(InvalidArgument):
        walk_folder(tree / "missing")
    with pytest.raises(InvalidArgument):
        walk_folder(tree, class_depth=0)


def _check_first_run(report):
    # 19 image files: 15 good, 3 bad in class folders, 1 outside; each counted once.
    assert (report.found, report.sent, report.stored, report.skipped, report.failed) == (19, 16, 15, 0, 4)
    reasons = {f.path: f.reason for f in report.failures}
    assert set(reasons) == {"bob/broken.png", "bob/empty.jpg", "carol/dangling.png", "stray.png"}
    assert reasons["bob/broken.png"].startswith("cannot identify the image format")  # not "items[3]: ..."
    assert "empty file" in reasons["bob/empty.jpg"]
    assert "cannot read" in reasons["carol/dangling.png"]
    assert "class folder" in reasons["stray.png"]
    assert report.failed == 4 and report.images_per_s > 0


def test_enroll_folder_reports_failures_and_a_rerun_stores_nothing_new(client, tree):
    client.create_gallery("photos")
    seen = []
    report = client.enroll_folder("photos", tree, batch_size=4, max_in_flight=2, progress=seen.append)
    _check_first_run(report)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 18 and seen[-1].stored == 15
    assert {(c.label, c.count) for c in client.classes("photos")} == set(CLASSES.items())
    again = client.enroll_folder("photos", tree, batch_size=5)
    assert (again.found, again.sent, again.stored, again.skipped, again.failed) == (19, 16, 0, 15, 4)
    assert client.get_gallery("photos").item_count == 15
    stored = client.search("photos", (tree / "alice" / "sub" / "0.png"), k=1)[0]
    assert stored.client_id == "alice/sub/0.png" and stored.label == "alice"


def test_local_client_bulk_gives_the_same_report(local_client, tree):
    local_client.create_gallery("photos")
    _check_first_run(local_client.enroll_folder("photos", tree, batch_size=4))


def test_a_request_closes_before_its_files_pass_the_byte_cap(local_client, tree, monkeypatch):
    sent: list[list[int]] = []  # the payload sizes of each request
    real = local_client._enroll_batches

    def spy(gallery, batches, **kwargs):
        def recorded():
            for items in batches:
                sent.append([len(item.payload) for item in items])
                yield items
        return real(gallery, recorded(), **kwargs)

    monkeypatch.setattr(local_client, "_enroll_batches", spy)
    local_client.create_gallery("photos")
    sizes = sorted(len(f.read_bytes()) for f in tree.rglob("*.png") if f.is_file())
    cap = sizes[-1] + sizes[-2] + 1  # room for two files, never for three of the largest
    _check_first_run(local_client.enroll_folder("photos", tree, batch_size=100, max_batch_bytes=cap))
    assert len(sent) > 1 and sum(map(len, sent)) == 16
    for request, following in zip(sent, sent[1:] + [None], strict=True):
        assert len(request) == 1 or sum(request) <= cap
        if following is not None:  # closed only because the next file did not fit
            assert sum(request) + following[0] > cap
    # A cap below every file: one file a request; the count still bounds a request.
    sent.clear()
    local_client.enroll_folder("photos", tree, batch_size=100, max_batch_bytes=1)
    assert [len(r) for r in sent] == [1] * 16
    sent.clear()
    local_client.enroll_folder("photos", tree, batch_size=5)
    assert [len(r) for r in sent] == [5, 5, 5, 1]
    with pytest.raises(InvalidArgument, match="max_batch_bytes"):
        local_client.enroll_folder("photos", tree, max_batch_bytes=0)


def test_a_file_larger_than_a_request_may_carry_fails_alone(server, tree):
    from twinsearch.client import Client

    big = tree / "alice" / "huge.png"
    big.write_bytes(os.urandom(300_000))
    # The client's message limit fits every other file of the tree, a few at a time, but not this one.
    with Client(f"127.0.0.1:{server.port}", timeout=20.0, max_message_bytes=200_000) as small:
        small.create_gallery("photos")
        report = small.enroll_folder("photos", tree)
    reasons = {f.path: f.reason for f in report.failures}
    assert "300,000 bytes: more than one request may carry" in reasons["alice/huge.png"]
    assert report.stored == 15 and report.failed == 5


def test_an_interrupted_run_resumes(client, tree):
    client.create_gallery("photos")

    def stop_after_two_batches(progress):
        if progress.done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.enroll_folder("photos", tree, batch_size=4, max_in_flight=1, progress=stop_after_two_batches)
    partial = client.get_gallery("photos").item_count
    assert 0 < partial < 15
    report = client.enroll_folder("photos", tree, batch_size=4, id_prefix="")
    assert (report.stored, report.skipped) == (15 - partial, partial)
    assert client.get_gallery("photos").item_count == 15


def test_unknown_gallery_stops_the_run(client, tree):
    with pytest.raises(NotFound):
        client.enroll_folder("nowhere", tree)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_stream_reconnects_and_resends_after_a_server_restart(tmp_path, tiny_model, png, caplog):
    """The server goes away half-way through a bulk run and comes back on the same port: the client
    reconnects, re-sends what was not acknowledged, and nothing is stored twice."""
    from twinsearch.server.app import ServerSettings, start_server

    settings = ServerSettings(data_dir=tmp_path / "d", model_path=tiny_model, address=f"127.0.0.1:{_free_port()}")
    servers = [start_server(settings)]
    root = tmp_path / "many"
    for label in range(6):
        (root / f"c{label}").mkdir(parents=True)
        for i in range(10):
            (root / f"c{label}" / f"{i}.png").write_bytes(png(1000 + 10 * label + i))
    restarted = threading.Event()
    caplog.set_level("WARNING", logger="twinsearch.client.enroll_stream")

    def restart(progress):
        if progress.done >= 20 and not restarted.is_set():
            restarted.set()
            servers[0].stop(grace=0.0)
            servers.append(start_server(settings))

    try:
        with Client(settings.address, timeout=30.0, retries=10, backoff=0.1) as c:
            c.create_gallery("g")
            report = c.enroll_folder("g", root, batch_size=5, max_in_flight=3, progress=restart)
            assert restarted.is_set()
            assert "enroll stream: UNAVAILABLE" in caplog.text and "reconnecting" in caplog.text
            assert report.stored + report.skipped == 60 and report.failed == 0
            assert c.get_gallery("g").item_count == 60
    finally:
        servers[-1].stop(grace=1.0)


def test_client_ids_are_paths_or_their_digest_when_too_long():
    from twinsearch.client.bulk import client_id_for

    assert client_id_for("a/b.png", "run1:") == "run1:a/b.png"
    long = "x" * 300 + ".png"
    digest = client_id_for(long)
    assert digest.startswith("sha256:") and len(digest) <= 256 and digest == client_id_for(long)


def test_stored_client_ids_from_a_server_without_find_items_is_none():
    from twinsearch.client.errors import error_for_code
    from twinsearch.client.vector_bulk import stored_client_ids

    class OldServer:
        def __init__(self, error):
            self.error = error

        def find_items(self, gallery, client_ids):
            raise self.error

    # A server older than FindItems: every image is embedded, and Enroll skips the stored ones.
    assert stored_client_ids(OldServer(error_for_code("UNIMPLEMENTED", "Method not found!")), "g", ["a"]) == set()
    with pytest.raises(NotFound):
        stored_client_ids(OldServer(NotFound("gallery 'g' not found")), "g", ["a"])
