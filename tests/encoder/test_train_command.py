"""`twinsearch train` refuses what it cannot do before it decodes or trains (values out of range, a device
that is not there, an output it cannot write, held-out data that cannot calibrate), and a Ctrl-C saves a
checkpoint that `--resume` continues from."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import torch

from twinsearch.client.cli import main
from twinsearch.encoder.training.recipe import calibration_shortfall
from twinsearch.encoder.training.trainer import Trainer, TrainingInterrupted, _stop_requests

from .conftest import interrupt_training_at

TINY = ["--class-depth", "2", "--invert", "--size", "16", "--widths", "8", "16", "--pool", "avg", "--dim", "8",
        "-P", "4", "-K", "3", "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def ctrl_c_reaches_python():
    """Python's own SIGINT handler while a test runs: a test run started in the background (CI) inherits
    an ignored SIGINT, which training leaves ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("flags, words", [
    (["--minutes", "-1"], "--minutes must be at least 0, got -1"),
    (["--steps", "-1"], "--steps must be at least 0, got -1"),
    (["--threads", "-1"], "--threads must be at least 0"),
    (["--dim", "0"], "--dim must be at least 1"),
    (["-P", "1"], "--classes-per-batch (-P) must be at least 2"),
    (["-K", "0"], "--images-per-class (-K) must be at least 1"),
    (["--eval-way", "1"], "--eval-way must be at least 2"),
    (["--val-fraction", "1"], "--val-fraction must be at least 0 and below 1, got 1"),
    (["--lr", "0"], "--lr must be above 0, got 0"),
    (["--aug-hflip", "1.5"], "--aug-hflip must be at least 0 and at most 1, got 1.5"),
    (["--aug-scale", "1.2", "0.8"], "--aug-scale takes the smallest and the largest factor"),
    (["--size", "0", "16"], "--size takes positive pixel counts"),
    (["--device", "nonsense"], "--device takes cpu, cuda, cuda:N or mps, got 'nonsense'"),
    (["--mean", "0", "0", "0"], "mean takes one value; got 3"),
])
def test_values_out_of_range_are_refused_before_decoding(glyph_tree, tmp_path, capsys, no_decoding, flags, words):
    status = main(["train", "--data", str(glyph_tree), "--steps", "2", *TINY, "--out", str(tmp_path / "m.tsm"),
                   *flags])
    err = capsys.readouterr().err
    assert status == 2, err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_aug_hflip_bounds_are_allowed(glyph_tree, tmp_path, capsys, no_decoding):
    # 1 (always mirror) is a probability like any other; the refusal then comes from the decoding guard
    with pytest.raises(AssertionError, match="decoded images"):
        main(["train", "--data", str(glyph_tree), "--steps", "2", *TINY, "--out", str(tmp_path / "m.tsm"),
              "--aug-hflip", "1"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device")
def test_a_cuda_device_on_a_machine_without_one_is_refused(glyph_tree, tmp_path, capsys, no_decoding):
    status = main(["train", "--data", str(glyph_tree), "--steps", "2", *TINY, "--out", str(tmp_path / "m.tsm"),
                   "--device", "cuda"])
    err = capsys.readouterr().err
    assert status == 2 and "--device cuda: no CUDA GPU is usable here" in err


def test_outputs_that_cannot_be_written_are_refused_before_decoding(glyph_tree, tmp_path, capsys, no_decoding):
    base = ["train", "--data", str(glyph_tree), "--steps", "2", *TINY]
    assert main([*base, "--out", str(tmp_path / "missing" / "m.tsm")]) == 2
    assert f"the folder {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file name in it" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "m.tsm"), "--checkpoint", str(tmp_path / "no" / "c.ckpt")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_default_name_keeps_dots_inside_the_file_name(glyph_tree, tmp_path, capsys):
    out = tmp_path / "chars.v2.tsm"
    assert main(["train", "--data", str(glyph_tree), "--steps", "1", "--val-every", "0", *TINY, "--out", str(out)]) == 0
    from twinsearch.encoder.card import read_card
    assert read_card(out)["name"] == "chars.v2"


def test_calibration_shortfall_counts_pairs():
    assert calibration_shortfall([0, 0, 1, 1]) is None           # 2 same-class, 4 different-class pairs
    assert "0 different-class" in calibration_shortfall([0, 0, 0])
    assert "0 same-class" in calibration_shortfall([0, 1, 2])
    assert "1 same-class" in calibration_shortfall([0, 0, 1])
    assert calibration_shortfall([]) is not None


def test_held_out_data_that_cannot_calibrate_is_refused_before_training(glyph_tree, tmp_path, capsys,
                                                                        monkeypatch):
    def no_training(self, resume=False):
        raise AssertionError("trained before refusing the calibration data")
    monkeypatch.setattr(Trainer, "fit", no_training)
    one_class = glyph_tree / "group0"  # at class depth 1: its classes; keep one of them
    calib = tmp_path / "calib"
    (calib / "only").mkdir(parents=True)
    for i, image in enumerate(sorted(next(p for p in one_class.iterdir() if p.is_dir()).iterdir())):
        (calib / "only" / f"{i}.png").write_bytes(image.read_bytes())
    status = main(["train", "--data", str(glyph_tree), "--steps", "2", *TINY, "--out", str(tmp_path / "m.tsm"),
                   "--calib-data", str(calib), "--calib-class-depth", "1"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"--calib-data {calib} cannot calibrate the model" in err and "0 different-class pairs" in err


def test_calibration_data_at_the_wrong_depth_names_the_calibration_flags(glyph_tree, tmp_path, capsys):
    status = main(["train", "--data", str(glyph_tree), "--steps", "2", *TINY, "--out", str(tmp_path / "m.tsm"),
                   "--calib-data", str(glyph_tree / "group0"), "--calib-class-depth", "2"])
    err = capsys.readouterr().err
    assert status == 2 and "--calib-class-depth" in err and "Traceback" not in err


def test_training_without_any_held_out_data_warns_that_the_model_has_no_thresholds(glyph_tree, tmp_path, capsys):
    out = tmp_path / "m.tsm"
    assert main(["train", "--data", str(glyph_tree), "--steps", "1", *TINY, "--out", str(out),
                 "--val-fraction", "0"]) == 0
    assert "no calibrated thresholds" in capsys.readouterr().err


def test_stop_requests_take_the_first_ctrl_c_and_let_the_second_through():
    told = []
    with _stop_requests(lambda: told.append(1)) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5) and told == [1]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            stop.wait(0.5)  # the signal is handled between bytecodes, here at the latest
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_requests_leave_an_ignored_ctrl_c_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with _stop_requests(lambda: None) as stop:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        assert not stop.wait(0.2)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_stop_requests_leave_other_threads_alone():
    seen = []

    def body():
        with _stop_requests(lambda: None) as stop:
            seen.append(stop.is_set())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [False] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_saves_a_checkpoint_that_resume_continues_from(glyph_tree, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.tsm"
    args = ["train", "--data", str(glyph_tree), *TINY, "--out", str(out), "--val-every", "0"]
    real = Trainer.fit
    interrupt_training_at(monkeypatch, 3)
    assert main([*args, "--steps", "50"]) == 130
    err = capsys.readouterr().err
    assert "stopping after this step to save a checkpoint" in err
    assert f"interrupted after step 3; checkpoint saved to {out}.ckpt" in err and "--resume" in err
    assert not out.exists() and (tmp_path / "m.tsm.ckpt").exists()
    assert torch.load(tmp_path / "m.tsm.ckpt", weights_only=False)["step"] == 3

    monkeypatch.setattr(Trainer, "fit", real)
    assert main([*args, "--steps", "5", "--resume"]) == 0
    from twinsearch.encoder.card import read_card
    assert read_card(out)["training"]["steps"] == 5


def test_resuming_past_the_budget_says_there_is_nothing_to_train(glyph_tree, tmp_path, capsys):
    out = tmp_path / "m.tsm"
    args = ["train", "--data", str(glyph_tree), *TINY, "--out", str(out), "--val-every", "0"]
    assert main([*args, "--steps", "4"]) == 0
    capsys.readouterr()
    assert main([*args, "--steps", "2", "--resume"]) == 0
    assert "the checkpoint is at step 4" in capsys.readouterr().err


def test_interruption_is_a_keyboard_interrupt():
    # code that catches KeyboardInterrupt around a training still sees a Ctrl-C as one
    assert issubclass(TrainingInterrupted, KeyboardInterrupt)


def test_skip_invalid_leaves_unreadable_images_out_and_says_so(glyph_tree, tmp_path, capsys):
    import shutil

    from twinsearch.encoder.card import read_card

    tree = tmp_path / "tree"
    shutil.copytree(glyph_tree, tree)
    first_class = next(p for p in sorted((tree / "group0").iterdir()) if p.is_dir())
    (first_class / "zz-broken.png").write_bytes(b"not an image")
    args = ["train", "--data", str(tree), "--steps", "1", *TINY, "--val-every", "0"]
    assert main([*args, "--out", str(tmp_path / "a.tsm")]) == 2
    assert "zz-broken.png" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b.tsm"), "--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert "1 unreadable images left out (--skip-invalid)" in err and "zz-broken.png" in err
    card = read_card(tmp_path / "b.tsm")
    data = card["data"]
    counted = data["train"]["images"] + (data["validation"] or {}).get("images", 0)
    assert counted == sum(1 for p in tree.rglob("*.png")) - 1
    assert any("unreadable" in w for w in card["training"]["warnings"])
