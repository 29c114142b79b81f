"""`twinsearch embed` without --ray: a local Ray instance (capped object store, no dashboard) started
and stopped by the command; a CSV manifest with metadata as the source."""

from __future__ import annotations

import csv
import json
import os
import subprocess

from twinsearch.client.vector_files import iter_batches

from .conftest import PYTHON, ROOT, glyph, png


def ray_sessions() -> set[str]:
    """Ray processes of this machine, by process id (raylets and their workers show "ray" in argv)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read()
            except OSError:
                continue
            if b"raylet" in argv or b"gcs_server" in argv:
                found.add(entry)
    return found


def test_embed_starts_and_stops_a_local_ray_for_a_manifest(tmp_path, model_path):
    images = tmp_path / "scans"
    images.mkdir()
    rows = []
    for k in range(3):
        for i in range(4):
            name = f"scans/{k}-{i}.png"
            (tmp_path / name).write_bytes(png(glyph(k, i)))
            rows.append({"file": name, "writer": f"writer{k}", "site": "north" if i % 2 else "south"})
    rows.append({"file": "scans/missing.png", "writer": "writer0", "site": ""})
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "writer", "site"])
        writer.writeheader()
        writer.writerows(rows)
    before = ray_sessions()
    out = tmp_path / "vectors"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("proto", "encoder", "server", "client")))
    env.pop("RAY_AUTH_MODE", None)  # set by an earlier ray.init in this process; unset, Ray would announce its default
    done = subprocess.run([PYTHON, "-m", "twinsearch.client.cli", "embed", str(manifest), "--out", str(out),
                           "--model", str(model_path), "--object-store-mb", "200", "--path-column", "file",
                           "--label-column", "writer", "--json"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # the missing file
    assert "Token authentication" not in done.stderr  # Ray's start-up notice is muted
    assert "constructor arguments in the object store" not in done.stderr  # its note on the replicas' pool too
    summary = json.loads(done.stdout)
    assert (summary["found"], summary["embedded"], summary["skipped"], summary["failed"]) == (13, 12, 0, 1)
    assert summary["failures"][0]["path"] == "scans/missing.png"
    assert "cannot read" in summary["failures"][0]["reason"]
    got = {cid: (label, meta) for b in iter_batches(out)
           for cid, label, meta in zip(b.client_ids, b.labels, b.metadata, strict=True)}
    assert got["scans/1-1.png"] == ("writer1", {"site": "north"})
    assert got["scans/2-0.png"] == ("writer2", {"site": "south"})
    assert len(got) == 12
    assert ray_sessions() <= before, "the command left Ray processes behind"
