"""Folder trees assembled from symbolic links: linked class and group folders, linked files, a link
cycle and broken links. Class names and item paths keep the link names."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

from twinsearch.encoder.data import open_source

LOGGER = "twinsearch.encoder.data"


def _images(folder, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")


def _relative(src, root) -> list[str]:
    return sorted(os.path.relpath(item, root) for item in src.items)


def test_class_folders_that_are_links(tmp_path):
    _images(tmp_path / "store" / "a", 2, 0)
    _images(tmp_path / "store" / "b", 3, 1)
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(tmp_path / "store" / "a", tree / "first")
    os.symlink(os.path.join("..", "store", "b"), tree / "second")  # a relative link
    src = open_source(tree)
    assert src.classes == ("first", "second") and len(src) == 5
    assert _relative(src, tree) == ["first/0.png", "first/1.png", "second/0.png", "second/1.png", "second/2.png"]
    assert src.read(0)[:4] == b"\x89PNG"


def test_group_folders_that_are_links_at_class_depth_two(tmp_path):
    for g, alphabet in enumerate(["Greek", "Latin"]):
        for c in range(2):
            _images(tmp_path / "omniglot" / alphabet / f"character0{c + 1}", 2, 10 * g + c)
    union = tmp_path / "union"
    union.mkdir()
    os.symlink(tmp_path / "omniglot" / "Greek", union / "Greek")
    os.symlink(tmp_path / "omniglot" / "Latin", union / "Roman")
    src = open_source(union, class_depth=2)
    assert src.classes == ("Greek/character01", "Greek/character02", "Roman/character01", "Roman/character02")
    assert src.groups == ("Greek", "Greek", "Roman", "Roman") and len(src) == 8
    assert all(item.startswith(str(union)) for item in src.items)


def test_links_to_image_files(tmp_path):
    _images(tmp_path / "elsewhere", 1, 0)
    _images(tmp_path / "tree" / "a", 1, 1)
    (tmp_path / "tree" / "b").mkdir()
    os.symlink(tmp_path / "elsewhere" / "0.png", tmp_path / "tree" / "a" / "linked.png")
    os.symlink(tmp_path / "elsewhere" / "0.png", tmp_path / "tree" / "b" / "x.png")
    src = open_source(tmp_path / "tree")
    assert src.classes == ("a", "b")
    assert _relative(src, tmp_path / "tree") == ["a/0.png", "a/linked.png", "b/x.png"]


def test_a_link_cycle_ends_and_every_image_is_read_once(tmp_path, caplog):
    tree = tmp_path / "tree"
    _images(tree / "a", 2, 0)
    _images(tmp_path / "store" / "b", 2, 1)
    os.symlink(tree, tree / "a" / "loop")  # back to the root
    os.symlink(tmp_path / "store" / "b", tree / "b")
    os.symlink(os.path.join("..", "..", "tree"), tmp_path / "store" / "b" / "back")  # round through the link
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = open_source(tree)
    assert src.classes == ("a", "b")
    assert _relative(src, tree) == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]
    assert "a/loop" in caplog.text and "b/back" in caplog.text


def test_broken_links_are_skipped_with_a_warning(tmp_path, caplog):
    tree = tmp_path / "tree"
    _images(tree / "a", 2, 0)
    os.symlink(tmp_path / "missing", tree / "ghost")
    os.symlink(tmp_path / "gone.png", tree / "a" / "gone.png")
    os.symlink("itself", tree / "a" / "itself")  # a link to itself
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = open_source(tree)
    assert src.classes == ("a",) and _relative(src, tree) == ["a/0.png", "a/1.png"]
    for name in ("ghost", "a/gone.png", "a/itself"):
        assert name in caplog.text


def test_a_root_that_is_a_link(tmp_path):
    _images(tmp_path / "real" / "a", 2, 0)
    os.symlink(tmp_path / "real", tmp_path / "alias")
    src = open_source(tmp_path / "alias")
    assert src.classes == ("a",) and all(item.startswith(str(tmp_path / "alias")) for item in src.items)


@pytest.mark.parametrize("hidden", [".cache", "__MACOSX"])
def test_linked_hidden_folders_stay_skipped(tmp_path, hidden):
    _images(tmp_path / "tree" / "a", 1, 0)
    _images(tmp_path / "other" / "b", 1, 1)
    os.symlink(tmp_path / "other", tmp_path / "tree" / hidden)
    assert open_source(tmp_path / "tree").classes == ("a",)


def test_a_second_link_to_one_folder_is_read_once(tmp_path, caplog):
    """Two names for one folder would put the same images in two classes: the first name wins."""
    _images(tmp_path / "store" / "a", 2, 0)
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(tmp_path / "store" / "a", tree / "one")
    os.symlink(tmp_path / "store" / "a", tree / "two")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert open_source(tree).classes == ("one",)
    assert str(tree / "two") in caplog.text
