"""`twinsearch evaluate` refuses flag values, output paths and data it cannot use in one line (exit 2),
before anything is embedded, and warns when the one-shot figure is fewer-way than --way."""

from __future__ import annotations

import argparse

import pytest
from PIL import Image

from twinsearch.client.cli import main
from twinsearch.encoder.commands import evaluate


def _tree(root, images_per_class):
    """root/c<i>/<v>.png with images_per_class[i] images in class i."""
    for c, count in enumerate(images_per_class):
        (root / f"c{c}").mkdir(parents=True)
        for v in range(count):
            Image.new("L", (28, 28), 30 * c + 5 * v).save(root / f"c{c}" / f"{v}.png")
    return root


def _refused(argv, capsys) -> str:
    status = main(["evaluate", *argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and err.count("twinsearch evaluate:") == 1
    line = err.replace("\r", "\n").strip().splitlines()[-1]  # after a progress bar, if any
    assert line.startswith("twinsearch evaluate: ")
    return line


def test_too_few_images_for_the_shot(glyph_tree, capsys):
    line = _refused(["--data", str(glyph_tree), "--class-depth", "2", "--shot", "6", "--episodes", "2"], capsys)
    assert "--shot 6 with --queries 1 needs at least 2 classes with 7 or more images" in line
    assert "lower --shot" in line


def test_within_group_on_a_flat_tree(glyph_tree, capsys):
    line = _refused(["--data", str(glyph_tree / "group0"), "--within-group", "--episodes", "2"], capsys)
    assert "--within-group" in line and "each class is a group of its own" in line and "--class-depth 2" in line


def test_one_class(tmp_path, capsys):
    line = _refused(["--data", str(_tree(tmp_path / "one", [3])), "--episodes", "2"], capsys)
    assert "holds 1 class" in line and "two or more" in line


def test_data_that_cannot_calibrate(tmp_path, capsys):
    line = _refused(["--data", str(_tree(tmp_path / "singles", [1, 1])), "--episodes", "2"], capsys)
    assert "at least 2 classes with 2 or more images each" in line and "calibration" in line


def test_cohort_with_too_many_references(tmp_path, capsys):
    data = _tree(tmp_path / "small", [3, 3, 3])
    line = _refused(["--data", str(data), "--episodes", "2", "--references", "3", "--cohort"], capsys)
    assert "--cohort needs at least 2 classes with more than R genuine images" in line and "lower R" in line


@pytest.mark.parametrize("flags, words", [
    (["--json", "{tmp}/nodir/r.json"], "the folder {tmp}/nodir does not exist"),
    (["--json", "{tmp}"], "is a folder; give a file name in it"),
    (["--plots", "{tmp}/afile"], "--plots {tmp}/afile is a file"),
    (["--plots", "{tmp}/afile/plots"], "{tmp}/afile is a file, so the folder cannot be created"),
])
def test_output_paths_are_checked_first(tmp_path, capsys, flags, words):
    (tmp_path / "afile").write_text("x")
    flags = [f.format(tmp=tmp_path) for f in flags]
    # --data does not exist either: the output path is told first, before any data is read or embedded
    line = _refused(["--data", str(tmp_path / "missing"), *flags], capsys)
    assert words.format(tmp=tmp_path) in line
    assert not (tmp_path / "nodir").exists()


@pytest.mark.parametrize("flags, words", [
    (["--episodes", "0"], "--episodes must be at least 1, got 0"),
    (["--queries", "0"], "--queries must be at least 1, got 0"),
    (["--way", "1"], "--way must be at least 2, got 1"),
    (["--shot", "0"], "--shot must be at least 1, got 0"),
    (["--threshold", "2.5"], "lies between 0 and 2, got 2.5"),
    (["--threshold", "-0.1"], "lies between 0 and 2, got -0.1"),
    (["--references", "2", "--cohort", "--threshold", "-1"], "cohort score must be 0 or more"),
])
def test_meaningless_values_are_refused(tmp_path, capsys, flags, words):
    line = _refused(["--data", str(tmp_path / "missing"), *flags], capsys)
    assert words in line


def test_fewer_classes_than_way_warns(glyph_tree, capsys):
    status = main(["evaluate", "--data", str(glyph_tree), "--class-depth", "2", "--episodes", "3"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "12.0-way, not 20-way: the data holds only 12 classes" in captured.err
    assert "mean way 12.0" in captured.out

    status = main(["evaluate", "--data", str(glyph_tree), "--class-depth", "2", "--episodes", "3", "--way", "5",
                   "--threshold", "2"])
    captured = capsys.readouterr()
    assert status == 0 and "warning" not in captured.err and "(command line)" in captured.out


def test_within_group_warning_names_the_groups(glyph_tree, capsys):
    status = main(["evaluate", "--data", str(glyph_tree), "--class-depth", "2", "--within-group", "--way", "10",
                   "--episodes", "3"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "6.0-way, not 10-way" in err and "2 of the 2 groups hold fewer than 10 (6 classes)" in err


def test_every_option_with_a_default_says_it():
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in (action.help or ""), action.option_strings
    for flag in ("--way", "--shot", "--episodes", "--seed", "--queries"):
        action = next(a for a in parser._actions if flag in a.option_strings)
        assert f"default {action.default}" in action.help, flag


def test_embedding_shows_progress_and_gives_the_model_s_embeddings():
    import numpy as np

    from twinsearch.encoder.commands.evaluate import _embed_with_progress

    class Model:
        dim, batch_size = 3, 4

        def embed_arrays(self, batch):
            return np.repeat(batch.reshape(len(batch), -1)[:, :1], 3, axis=1)

    updates = []

    class Bar:
        def __init__(self, total, **kwargs):
            updates.append(("total", total))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def update(self, n):
            updates.append(n)

    arrays = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    out = _embed_with_progress(Model(), arrays, Bar)
    assert np.array_equal(out, np.repeat(arrays.reshape(10, 1), 3, axis=1))
    assert updates == [("total", 10), 4, 4, 2]
