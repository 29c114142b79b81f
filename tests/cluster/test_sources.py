"""The rows of a source: ids as `twinsearch index` gives them; manifests; vector files. No Ray."""

from __future__ import annotations

import numpy as np
import pytest

from twinsearch.client.bulk import client_id_for, walk_folder
from twinsearch.client.errors import FailedPrecondition, InvalidArgument
from twinsearch.client.vector_files import VectorFileWriter, iter_batches, read_info, written_ids
from twinsearch.server.cluster.sources import list_source

from .conftest import make_tree


def test_folder_rows_are_index_rows(tmp_path):
    root = make_tree(tmp_path / "t", classes=3, per_class=2)
    (root / "stray.png").write_bytes(b"x")
    listing = list_source(root)
    entries, outside = walk_folder(root)
    assert [(r.client_id, r.label) for r in listing.rows] == [(client_id_for(e.relative), e.label) for e in entries]
    assert [f.path for f in listing.failures] == [f.path for f in outside] == ["stray.png"]
    assert listing.found == 9


def test_rows_name_files_by_absolute_path(tmp_path, monkeypatch):
    import csv
    import zipfile
    from pathlib import Path

    make_tree(tmp_path / "t", classes=2, per_class=1, bad=False)
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        zf.write(tmp_path / "t" / "c0" / "0.png", "t/c0/0.png")
    with open(tmp_path / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], ["t/c1/0.png", "c1"]])
    monkeypatch.chdir(tmp_path)  # a worker on the cluster does not share this working folder
    for source in ("t", "t.zip", "m.csv"):
        rows = list_source(source).rows
        assert rows and all(Path(r.path).is_absolute() and Path(r.path).exists() for r in rows), source


def test_parquet_manifest_and_bad_manifests(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"file": ["a.png", "b.png", "a.png"], "who": ["x", "y", "x"], "n": [1, 2, 3]}),
                   tmp_path / "m.parquet")
    listing = list_source(tmp_path / "m.parquet", path_column="file", label_column="who")
    assert [(r.client_id, r.label, r.metadata) for r in listing.rows] == [("a.png", "x", {"n": "1"}),
                                                                         ("b.png", "y", {"n": "2"})]
    assert "same path" in listing.failures[0].reason
    with pytest.raises(InvalidArgument, match="no column 'path'"):
        list_source(tmp_path / "m.parquet")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InvalidArgument, match="neither a folder"):
        list_source(tmp_path / "x.txt")


def test_vector_files_round_trip_whole_files_and_one_model(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, 4)).astype(np.float32)
    writer = VectorFileWriter(tmp_path, model="m", fingerprint="f1", dim=4, rows_per_file=4)
    writer.add([f"id{i}" for i in range(10)], ["a"] * 10, [{"k": str(i)} for i in range(10)], vectors)
    assert writer.files_written == 2  # two whole files of 4; 2 rows pending until close
    writer.close()
    info = read_info(tmp_path)
    assert (info.model, info.fingerprint, info.dim, info.rows, len(info.files)) == ("m", "f1", 4, 10, 3)
    batches = list(iter_batches(tmp_path, batch_size=3))
    assert [c for b in batches for c in b.client_ids] == [f"id{i}" for i in range(10)]
    np.testing.assert_array_equal(np.concatenate([b.vectors for b in batches]), vectors)
    assert batches[0].metadata[1] == {"k": "1"}
    assert written_ids(tmp_path) == {f"id{i}" for i in range(10)}
    other = VectorFileWriter(tmp_path, model="m2", fingerprint="f2", dim=4)
    other.add(["z"], ["a"], [{}], vectors[:1])
    other.close()
    with pytest.raises(FailedPrecondition, match="several models"):
        read_info(tmp_path)
