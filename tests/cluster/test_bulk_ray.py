"""`twinsearch embed` and `twinsearch index --vectors / --ray` on a real two-node Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from twinsearch.client import Client
from twinsearch.client.vector_files import iter_batches, read_info

from .conftest import cli, make_tree

pytestmark = pytest.mark.usefixtures("ray_cluster")


def read_vectors(folder: Path) -> dict[str, tuple[str, np.ndarray]]:
    out: dict[str, tuple[str, np.ndarray]] = {}
    rows = 0
    for batch in iter_batches(folder):
        for i, client_id in enumerate(batch.client_ids):
            out[client_id] = (batch.labels[i], batch.vectors[i])
            rows += 1
    assert rows == len(out), "a client id was written twice"
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src") / "glyphs", classes=6, per_class=8)


def test_embed_equals_server_embed_and_resumes(tree, tmp_path, model_path, server, capsys):
    out = tmp_path / "vectors"
    status = cli("embed", str(tree), "--out", str(out), "--model", str(model_path), "--encoders", "2",
                 "--batch", "8", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert status == 1  # two images failed and --allow-partial was not given
    assert (summary["found"], summary["embedded"], summary["skipped"], summary["failed"]) == (50, 48, 0, 2)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["path"] for f in failures) == ["c0/corrupt.png", "c1/notes.png"]

    info = read_info(out)
    with Client(server.address, timeout=30) as client:
        served = client.info().model
        assert (info.fingerprint, info.dim, info.model) == (served.fingerprint, served.dim, served.name)
        vectors = read_vectors(out)
        ids = sorted(vectors)
        assert ids == sorted(f"c{k}/{i}.png" for k in range(6) for i in range(8))  # `twinsearch index` ids
        assert all(vectors[i][0] == i.split("/")[0] for i in ids)
        embedded = client.embed([(tree / i).read_bytes() for i in ids])
    np.testing.assert_allclose(np.stack([vectors[i][1] for i in ids]), embedded, rtol=0, atol=1e-6)

    # A second run embeds nothing; a new image is the only row the third run adds.
    assert cli("embed", str(tree), "--out", str(out), "--model", str(model_path), "--json", "--allow-partial") == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["found"], again["embedded"], again["skipped"], again["failed"]) == (50, 0, 48, 2)
    (tree / "c5" / "new.png").write_bytes((tree / "c5" / "0.png").read_bytes())
    try:
        assert cli("embed", str(tree), "--out", str(out), "--model", str(model_path), "--json",
                   "--allow-partial") == 0
        third = json.loads(capsys.readouterr().out)
        assert (third["embedded"], third["skipped"]) == (1, 48)
        assert len(read_vectors(out)) == 49
    finally:
        (tree / "c5" / "new.png").unlink()


def test_decoding_in_tasks_or_in_the_replicas_gives_the_same_vectors(tree, tmp_path, model_path, capsys):
    outs = {}
    for place in ("tasks", "replicas"):
        outs[place] = tmp_path / place
        assert cli("embed", str(tree), "--out", str(outs[place]), "--model", str(model_path), "--decode", place,
                   "--batch", "8", "--json", "--allow-partial") == 0
        summary = json.loads(capsys.readouterr().out)
        assert (summary["found"], summary["embedded"], summary["failed"]) == (50, 48, 2)
    in_tasks, in_replicas = read_vectors(outs["tasks"]), read_vectors(outs["replicas"])
    assert sorted(in_tasks) == sorted(in_replicas)
    for client_id, (label, vector) in in_tasks.items():
        assert in_replicas[client_id][0] == label
        np.testing.assert_array_equal(in_replicas[client_id][1], vector)
    assert (outs["tasks"] / "failures.jsonl").read_text() != ""


def test_embed_refuses_another_models_folder(tree, tmp_path, model_path, other_model_path, capsys):
    out = tmp_path / "v"
    make_tree(tmp_path / "one", classes=1, per_class=2, bad=False)
    assert cli("embed", str(tmp_path / "one"), "--out", str(out), "--model", str(model_path), "--json") == 0
    capsys.readouterr()
    assert cli("embed", str(tmp_path / "one"), "--out", str(out), "--model", str(other_model_path)) == 1
    err = capsys.readouterr().err
    assert "holds vectors of model" in err and "use another --out" in err and "Traceback" not in err


def test_zip_gives_the_folders_ids(tree, tmp_path, model_path, capsys):
    archive = tmp_path / "glyphs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*.png")):
            zf.write(path, f"glyphs/{path.relative_to(tree).as_posix()}")
    out = tmp_path / "zv"
    assert cli("embed", str(archive), "--out", str(out), "--model", str(model_path), "--json",
               "--allow-partial") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["found"], summary["embedded"], summary["failed"]) == (50, 48, 2)
    assert sorted(read_vectors(out)) == sorted(f"c{k}/{i}.png" for k in range(6) for i in range(8))


def test_vectors_load_like_images_and_refuse_another_model(tree, tmp_path, model_path, other_model_path, server,
                                                             capsys):
    out = tmp_path / "vectors"
    assert cli("embed", str(tree), "--out", str(out), "--model", str(model_path), "--allow-partial",
               "--no-progress") == 0
    address = ["--address", server.address]
    assert cli("index", str(tree), "--gallery", "by-images", "--create", "--allow-partial", "--no-progress",
               *address) == 0
    capsys.readouterr()
    assert cli("index", "--vectors", str(out), "--gallery", "by-vectors", "--create", "--no-progress", "--json",
               *address) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["found"], first["stored"], first["skipped"], first["failed"]) == (48, 48, 0, 0)
    assert cli("index", "--vectors", str(out), "--gallery", "by-vectors", "--json", *address) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["found"], again["stored"], again["skipped"], again["failed"]) == (48, 0, 48, 0)

    probes = [(tree / f"c{k}" / f"{i}.png").read_bytes() for k in range(6) for i in (1, 6)]
    with Client(server.address, timeout=30) as client:
        by_images = client.identify("by-images", probes, k=3)
        by_vectors = client.identify("by-vectors", probes, k=3)
        assert client.get_gallery("by-vectors").item_count == 48
    for a, b in zip(by_images, by_vectors, strict=True):
        assert a.label == b.label
        assert [(c.label, c.distance) for c in a.candidates] == [(c.label, c.distance) for c in b.candidates]

    # Vectors of another model are refused before anything is sent, into a gallery bound to another model
    other = tmp_path / "other"
    assert cli("embed", str(tree), "--out", str(other), "--model", str(other_model_path), "--allow-partial",
               "--no-progress") == 0
    capsys.readouterr()
    assert cli("index", "--vectors", str(other), "--gallery", "by-images", *address) == 1
    err = capsys.readouterr().err
    fingerprints = (read_info(other).fingerprint, read_info(out).fingerprint)
    assert "FAILED_PRECONDITION" in err and all(fp in err for fp in fingerprints)
    # ... and --create makes no gallery for vectors of a model the server does not hold
    assert cli("index", "--vectors", str(other), "--gallery", "fresh", "--create", *address) == 2
    err = capsys.readouterr().err
    assert "which the server does not hold" in err and "nothing was created" in err
    with Client(server.address, timeout=30) as client:
        served = client.info().model.name
    assert cli("index", "--vectors", str(other), "--gallery", "fresh", "--create", "--model", served, *address) == 2
    assert "is another" in capsys.readouterr().err
    with Client(server.address, timeout=30) as client:
        assert "fresh" not in [g.name for g in client.galleries()]


def test_index_with_ray_streams_vectors(tree, model_path, server, capsys):
    address = ["--address", server.address]
    assert cli("index", str(tree), "--gallery", "streamed", "--create", "--ray", "auto", "--model-file",
               str(model_path), "--encoders", "2", "--json", *address) == 1  # two bad images
    report = json.loads(capsys.readouterr().out)
    assert (report["found"], report["stored"], report["skipped"], report["failed"]) == (50, 48, 0, 2)
    assert report["sent"] == 48
    # A second run asks the server which client ids the gallery holds and embeds only the others: here
    # the two bad images, which fail again. Nothing is embedded or sent that the gallery has.
    assert cli("index", str(tree), "--gallery", "streamed", "--ray", "auto", "--model-file", str(model_path),
               "--json", "--allow-partial", *address) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["found"], again["sent"], again["stored"], again["skipped"], again["failed"]) == (50, 0, 0, 48, 2)
    with Client(server.address, timeout=30) as client:
        a = client.identify("streamed", (tree / "c3" / "2.png").read_bytes(), k=1)
        assert a.label == "c3" and a.candidates[0].distance == pytest.approx(0.0, abs=1e-6)


def test_index_with_ray_embeds_nothing_the_gallery_holds(tmp_path, model_path, server, capsys, monkeypatch):
    from twinsearch.server.cluster import pipeline

    source = make_tree(tmp_path / "clean", classes=2, per_class=3, bad=False)
    args = ["index", str(source), "--gallery", "clean", "--ray", "auto", "--model-file", str(model_path), "--json",
            "--address", server.address]
    assert cli(*args, "--create") == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["found"], first["sent"], first["stored"], first["skipped"]) == (6, 6, 6, 0)

    def no_pipeline(*_args, **_kwargs):
        raise AssertionError("the pipeline ran although the gallery holds every image")

    monkeypatch.setattr(pipeline, "embed_rows", no_pipeline)
    assert cli(*args) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["found"], again["sent"], again["stored"], again["skipped"], again["failed"]) == (6, 0, 0, 6, 0)


def replica_processes() -> set[int]:
    """Process ids of the pipeline's encoder replicas (Ray names them after the class they run: on this
    cluster without GPUs the replicas decode their own images)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    command = f.read()
                    if b"MapBatches(EncoderReplica)" in command or b"MapBatches(DecodingReplica)" in command:
                        pids.add(int(entry))
            except OSError:
                continue
    return pids


def test_killing_a_replica_loses_and_duplicates_nothing(tmp_path, model_path):
    from twinsearch.server.cluster.pipeline import EmbedSettings, embed_to_parquet

    source = make_tree(tmp_path / "many", classes=20, per_class=60)  # 1,200 images and 2 bad ones
    out = tmp_path / "out"
    progressed = threading.Event()
    result: dict = {}

    def run() -> None:
        try:
            result["report"] = embed_to_parquet(
                source, out, model=model_path, settings=EmbedSettings(encoders=2, batch=4), rows_per_file=64,
                progress=lambda total, done, failed: done and progressed.set())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    assert progressed.wait(120), "the pipeline made no progress"
    victims = replica_processes()
    assert victims, "no encoder replica process found"
    victim = min(victims)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    worker.join(300)
    assert not worker.is_alive()
    assert "error" not in result, result.get("error")
    report = result["report"]
    assert report.found == report.embedded + report.skipped + report.failed == 1202
    assert report.failed == 2 and report.embedded == 1200
    assert report.seconds > 0 and killed_at
    vectors = read_vectors(out)  # raises if a client id was written twice
    assert sorted(vectors) == sorted(f"c{k}/{i}.png" for k in range(20) for i in range(60))
    assert victim not in replica_processes()
