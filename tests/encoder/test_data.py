from __future__ import annotations

import gzip
import struct
import zipfile

import numpy as np
import pytest

from twinsearch.encoder.data import load_arrays, open_source, read_idx, split_classes
from twinsearch.encoder.errors import DataError
from twinsearch.encoder.preprocess import Preprocess

from .conftest import OMNIGLOT_SMALL1, OMNIGLOT_SMALL2


def test_folder_tree_depth_two_and_one(glyph_tree):
    src = open_source(glyph_tree, class_depth=2)
    assert src.num_classes == 12 and len(src) == 72
    assert set(src.groups) == {"group0", "group1"} and src.classes[0] == "group0/char00"
    flat = open_source(glyph_tree / "group1", class_depth=1)
    assert flat.num_classes == 6 and flat.groups == flat.classes
    arrays = load_arrays(src, Preprocess(width=16, height=16, invert=True))
    assert arrays.images.shape == (72, 1, 16, 16) and 0 <= arrays.images.min() and arrays.images.max() <= 1
    assert list(arrays.group_labels()) == [0] * 6 + [1] * 6


def test_zip_with_top_folder_is_read_directly(glyph_tree, tmp_path):
    archive = tmp_path / "tree.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(glyph_tree.rglob("*.png")):
            zf.write(f, "top/" + str(f.relative_to(glyph_tree)))
        zf.writestr("__MACOSX/top/._junk.png", b"junk")
        zf.writestr("top/README.txt", b"not an image")
    src = open_source(archive, class_depth=2)
    assert src.num_classes == 12 and len(src) == 72 and src.archive == str(archive)
    assert src.read(0)[:4] == b"\x89PNG"


def test_omniglot_zips():
    small1 = open_source(OMNIGLOT_SMALL1, class_depth=2)
    assert (small1.num_classes, len(small1)) == (136, 2720)
    assert sorted(set(small1.groups)) == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    held = open_source(OMNIGLOT_SMALL2, class_depth=2).select_groups(["Japanese_(katakana)", "Sanskrit", "Tagalog"])
    assert held.num_classes == 47 + 42 + 17 and len(held) == 20 * held.num_classes
    with pytest.raises(DataError, match="no group"):
        held.select_groups(["Klingon"])


def _write_idx(path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_folder(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (30, 28, 28), dtype=np.uint8)
    labels = np.arange(30) % 3
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    src = open_source(tmp_path, split="test")
    assert len(src) == 30 and src.num_classes == 3 and np.array_equal(src.read(4), images[4])
    arrays = load_arrays(src, Preprocess(width=28, height=28))
    assert np.allclose(arrays.images[:, 0] * 255, images, atol=1e-3)
    with pytest.raises(DataError):
        read_idx(tmp_path, "train")


def test_bad_paths_and_splits(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        open_source(tmp_path / "empty")
    keep, held = split_classes(20, 0.1, seed=1)
    assert len(held) == 2 and len(keep) == 18 and not set(keep) & set(held)
