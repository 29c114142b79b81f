"""Defects found by using `twinsearch train`, `evaluate` and `index` as a user would: values refused only after
decoding (or not at all), tracebacks from torch and numpy, a model trained on one class, messages that did
not say what a Ctrl-C left behind or why the one-shot figure is fewer-way."""

from __future__ import annotations

import argparse
import contextlib
import signal
from types import SimpleNamespace

import pytest
from PIL import Image

from twinsearch.client.bulk import BulkProgress
from twinsearch.client.cli import main
from twinsearch.client.commands import index as index_command
from twinsearch.encoder.card import read_card
from twinsearch.encoder.training.trainer import Trainer

from .conftest import glyph, interrupt_training_at

TINY = ["--invert", "--size", "16", "--widths", "8", "16", "--pool", "avg", "--dim", "8", "-P", "4", "-K", "3",
        "--threads", "1", "--no-progress", "--no-graph", "--eval-episodes", "5"]


def _tree(root, counts):
    """root/c<i>/<n>.png, class i holding counts[i] synthetic glyphs."""
    for c, count in enumerate(counts):
        (root / f"c{c}").mkdir(parents=True)
        for v in range(count):
            Image.fromarray(glyph(c, v)).save(root / f"c{c}" / f"{v}.png")
    return root


@pytest.mark.parametrize("flags, words", [
    (["--ema", "1"], "--ema must be at least 0 and below 1, got 1"),
    (["--posterior-weight", "2"], "--posterior-weight must be at least 0 and at most 1, got 2"),
    (["--seed", "-1"], "--seed must be at least 0, got -1"),
    (["--split-seed", "-1"], "--split-seed must be at least 0, got -1"),
    (["--calib-data", "CALIB", "--calib-class-depth", "0"], "--calib-class-depth must be at least 1, got 0"),
])
def test_train_refuses_these_values_before_decoding(glyph_tree, tmp_path, capsys, no_decoding, flags, words):
    """--ema and --posterior-weight were refused after decoding, a negative seed by numpy without naming the
    flag, and --calib-class-depth 0 was taken for "not given"."""
    flags = [str(glyph_tree) if f == "CALIB" else f for f in flags]
    status = main(["train", "--data", str(glyph_tree), "--class-depth", "2", "--steps", "2", *TINY,
                   "--out", str(tmp_path / "m.tsm"), *flags])
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"twinsearch train: {words}" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, words", [
    (["--seed", "-1"], "--seed must be at least 0, got -1"),
    (["--device", "nonsense"], "--device takes cpu, cuda, cuda:N or mps, got 'nonsense'"),
])
def test_evaluate_refuses_these_values_before_reading_anything(glyph_tree, tmp_path, capsys, monkeypatch, flags,
                                                               words):
    """Both were tracebacks: the seed's from numpy after the whole data set was embedded, the device's from
    torch as the model loaded."""
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded the model before refusing the settings")
    monkeypatch.setattr("twinsearch.encoder.model.load_model", no_loading)
    status = main(["evaluate", "--data", str(glyph_tree), "--class-depth", "2", "--episodes", "5", *flags])
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"twinsearch evaluate: {words}" in err and "Traceback" not in err


def test_training_on_one_class_is_refused(tmp_path, capsys, no_decoding):
    """With --val-fraction 0 one class trained without a word: a loss over one class teaches nothing."""
    data = _tree(tmp_path / "one", [4])
    status = main(["train", "--data", str(data), "--val-fraction", "0", "--steps", "2", *TINY,
                   "--out", str(tmp_path / "m.tsm")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "training needs at least 2 classes to tell apart" in err and "holds 1" in err
    assert not (tmp_path / "m.tsm").exists()


def test_a_fewer_way_figure_names_the_classes_too_small_to_draw(tmp_path, capsys):
    """Classes of one image are never drawn into an episode: the warning said only "holds 5 classes" of a
    3-way figure."""
    data = _tree(tmp_path / "train", [3] * 6)
    calib = _tree(tmp_path / "calib", [3, 3, 3, 1, 1])
    status = main(["train", "--data", str(data), "--val-fraction", "0", "--calib-data", str(calib), "--steps", "1",
                   *TINY, "--out", str(tmp_path / "m.tsm")])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "is 3.0-way, not 20-way: the calibration data holds only 5 classes, 3 of them with 2 or more images" in err


@pytest.fixture
def ctrl_c_reaches_python():
    """Python's own SIGINT handler while the test runs (a test run in the background inherits an ignored one)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_an_interrupted_training_says_no_model_was_written_and_how_to_write_it(glyph_tree, tmp_path, capsys,
                                                                              monkeypatch, ctrl_c_reaches_python):
    out = tmp_path / "m.tsm"
    args = ["train", "--data", str(glyph_tree), "--class-depth", "2", *TINY, "--out", str(out), "--val-every", "0"]
    real = Trainer.fit
    interrupt_training_at(monkeypatch, 3)
    assert main([*args, "--steps", "50"]) == 130
    err = capsys.readouterr().err
    assert f"No model written to {out}" in err
    assert "with --resume --steps 3 it writes the model kept so far without training more" in err
    monkeypatch.setattr(Trainer, "fit", real)
    assert main([*args, "--steps", "3", "--resume"]) == 0
    assert read_card(out)["training"]["steps"] == 3


def test_an_interrupted_index_says_what_was_stored_and_that_a_rerun_resumes(tmp_path, capsys, monkeypatch):
    """A Ctrl-C printed only "interrupted", leaving the user to wonder whether to start over."""
    gallery = SimpleNamespace(model="m")

    @contextlib.contextmanager
    def connect(args):
        yield SimpleNamespace(get_gallery=lambda name: gallery)

    def send(client, progress):
        progress(BulkProgress(total=10, done=4, stored=3, skipped=1, failed=0))
        raise KeyboardInterrupt

    monkeypatch.setattr(index_command, "connect", connect)
    args = argparse.Namespace(gallery="g", create=False, model=None, no_progress=True, json=False)
    try:
        status = index_command._send(args, send)
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C went through with no word on what was stored")
    assert status == 130
    err = capsys.readouterr().err
    assert "interrupted after 4 of 10 files: 3 stored, 1 already stored, 0 failed" in err
    assert "the same command again sends only what is missing" in err


def test_evaluate_s_error_after_a_progress_bar_starts_a_line_and_no_progress_hides_the_bars(tmp_path, capsys):
    data = _tree(tmp_path / "data", [3, 3, 3])
    (data / "c1" / "9-broken.png").write_bytes(b"not an image")
    assert main(["evaluate", "--data", str(data), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.split("\r")[-1].startswith("twinsearch evaluate: ")  # not after the bar on its line
    assert "9-broken.png" in err
    (data / "c1" / "9-broken.png").unlink()
    assert main(["evaluate", "--data", str(data), "--episodes", "2", "--way", "3", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "decoding" not in err and "embedding" not in err


def test_enroll_of_a_folder_points_to_index_before_connecting(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    status = main(["enroll", "staff", "carol", str(folder), "--address", "127.0.0.1:1", "--timeout", "60"])
    err = capsys.readouterr().err
    assert status == 2
    assert f"{folder} is a folder: enroll takes image files" in err
    assert f"twinsearch index {folder} --gallery staff" in err
