"""Bulk indexing of a folder tree assembled from symbolic links: linked class and group folders,
linked files, a link cycle and broken links. Labels and client ids keep the link names."""

import logging
import os

from twinsearch.client.bulk import walk_folder

LOGGER = "twinsearch.client.bulk"


def _images(folder, png, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}.png").write_bytes(png(seed + i))


def _walked(root, class_depth: int = 1):
    entries, outside = walk_folder(root, class_depth)
    assert all(e.path == root / e.relative for e in entries)  # the link names, not the targets
    return [(e.relative, e.label) for e in entries], outside


def test_class_folders_that_are_links(tmp_path, png):
    _images(tmp_path / "store" / "a", png, 2, 0)
    _images(tmp_path / "store" / "b", png, 1, 10)
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(tmp_path / "store" / "a", tree / "first")
    os.symlink(os.path.join("..", "store", "b"), tree / "second")  # a relative link
    entries, outside = _walked(tree)
    assert entries == [("first/0.png", "first"), ("first/1.png", "first"), ("second/0.png", "second")]
    assert outside == []


def test_group_folders_that_are_links_at_class_depth_two(tmp_path, png):
    for g, alphabet in enumerate(["Greek", "Latin"]):
        _images(tmp_path / "omniglot" / alphabet / "character01", png, 1, 10 * g)
    union = tmp_path / "union"
    union.mkdir()
    os.symlink(tmp_path / "omniglot" / "Greek", union / "Greek")
    os.symlink(tmp_path / "omniglot" / "Latin", union / "Roman")
    entries, _ = _walked(union, class_depth=2)
    assert entries == [("Greek/character01/0.png", "Greek/character01"),
                       ("Roman/character01/0.png", "Roman/character01")]


def test_links_to_image_files(tmp_path, png):
    _images(tmp_path / "elsewhere", png, 1, 0)
    _images(tmp_path / "tree" / "a", png, 1, 10)
    os.symlink(tmp_path / "elsewhere" / "0.png", tmp_path / "tree" / "a" / "linked.png")
    entries, _ = _walked(tmp_path / "tree")
    assert entries == [("a/0.png", "a"), ("a/linked.png", "a")]


def test_a_link_cycle_ends_and_every_image_is_listed_once(tmp_path, png, caplog):
    tree = tmp_path / "tree"
    _images(tree / "a", png, 2, 0)
    _images(tmp_path / "store" / "b", png, 1, 10)
    os.symlink(tree, tree / "a" / "loop")  # back to the root
    os.symlink(tmp_path / "store" / "b", tree / "b")
    os.symlink(os.path.join("..", "..", "tree"), tmp_path / "store" / "b" / "back")  # round through the link
    caplog.set_level(logging.WARNING, logger=LOGGER)
    entries, _ = _walked(tree)
    assert entries == [("a/0.png", "a"), ("a/1.png", "a"), ("b/0.png", "b")]
    assert str(tree / "a" / "loop") in caplog.text and str(tree / "b" / "back") in caplog.text


def test_broken_links_are_warned_about(tmp_path, png, caplog):
    """A broken link to a folder is skipped; one with an image's name stays listed, so that the report
    of the run names it as a file that could not be read (as before links were followed)."""
    tree = tmp_path / "tree"
    _images(tree / "a", png, 1, 0)
    os.symlink(tmp_path / "missing", tree / "ghost")
    os.symlink(tmp_path / "gone.png", tree / "a" / "gone.png")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    entries, outside = _walked(tree)
    assert entries == [("a/0.png", "a"), ("a/gone.png", "a")] and outside == []
    assert str(tree / "ghost") in caplog.text and str(tree / "a" / "gone.png") in caplog.text


def test_enroll_a_linked_tree(local_client, tmp_path, png):
    _images(tmp_path / "store" / "alice", png, 2, 0)
    _images(tmp_path / "store" / "bob", png, 2, 10)
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(tmp_path / "store" / "alice", tree / "carol")
    os.symlink(tmp_path / "store" / "bob", tree / "dave")
    os.symlink(tree, tree / "dave" / "loop")
    local_client.create_gallery("g")
    report = local_client.enroll_folder("g", tree, batch_size=3)
    assert (report.found, report.stored, report.failed) == (4, 4, 0)
    assert {(c.label, c.count) for c in local_client.classes("g")} == {("carol", 2), ("dave", 2)}
    hit = local_client.search("g", tree / "dave" / "1.png", k=1)[0]
    assert hit.client_id == "dave/1.png" and hit.label == "dave"


def test_a_second_link_to_one_folder_is_listed_once(tmp_path, png, caplog):
    """Two names for one folder would enroll the same images under two labels: the first name wins."""
    _images(tmp_path / "store" / "a", png, 1, 0)
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(tmp_path / "store" / "a", tree / "one")
    os.symlink(tmp_path / "store" / "a", tree / "two")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert _walked(tree)[0] == [("one/0.png", "one")]
    assert str(tree / "two") in caplog.text
