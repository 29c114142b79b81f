"""`twinsearch train` and `evaluate` report a data set they cannot read or split in one line, and
suggest `--class-depth` when the classes look one folder deeper."""

from __future__ import annotations

import pytest
from PIL import Image

from twinsearch.client.cli import main
from twinsearch.encoder.data.layout import deeper_class_depth


def test_deeper_class_depth(glyph_tree, tmp_path):
    assert deeper_class_depth(glyph_tree, 1) == 2   # group/class/image read at depth 1
    assert deeper_class_depth(glyph_tree, 2) is None
    assert deeper_class_depth(glyph_tree / "group0", 1) is None  # class/image
    assert deeper_class_depth(tmp_path / "missing", 1) is None


def test_train_at_too_shallow_a_depth_says_so_in_one_line(glyph_tree, tmp_path, capsys):
    status = main(["train", "--data", str(glyph_tree), "--out", str(tmp_path / "m.tsm"), "--steps", "1",
                   "--size", "28", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("twinsearch train: cannot hold out 2 of 2 classes") and "Traceback" not in err
    assert "try --class-depth 2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.tsm").exists()


def test_train_on_a_missing_folder_gives_no_depth_hint(tmp_path, capsys):
    status = main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.tsm"), "--steps", "1"])
    err = capsys.readouterr().err
    assert status == 2 and "does not exist" in err and "--class-depth" not in err and "Traceback" not in err


@pytest.fixture
def tree_with_a_corrupt_image(tmp_path, glyph_tree):
    root = tmp_path / "tree"
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for v in range(2):
            Image.new("L", (28, 28), 40 * c + v).save(root / f"c{c}" / f"{v}.png")
    (root / "c1" / "broken.png").write_bytes(b"not a png")
    return root


def test_evaluate_names_an_unreadable_image(tree_with_a_corrupt_image, capsys):
    status = main(["evaluate", "--data", str(tree_with_a_corrupt_image), "--episodes", "2", "--way", "2"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    message = err.replace("\r", "\n").strip().splitlines()[-1]  # after the progress bar, cleared
    assert message.startswith("twinsearch evaluate: ") and "c1/broken.png: cannot identify" in message
    assert err.count("twinsearch evaluate") == 1


def test_evaluate_at_too_shallow_a_depth_hints_the_depth(glyph_tree, capsys):
    status = main(["evaluate", "--data", str(glyph_tree), "--groups", "nope"])
    err = capsys.readouterr().err
    assert status == 2 and "no group named 'nope'" in err and "try --class-depth 2" in err
