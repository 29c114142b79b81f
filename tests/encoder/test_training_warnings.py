"""Training that cannot fail silently: collapse, too few validation classes, too little calibration, too
few steps for the budget, and the preset mechanism of `twinsearch train`."""

from __future__ import annotations

import argparse
import inspect
import json

import numpy as np
import pytest

from twinsearch.encoder.card import read_card
from twinsearch.encoder.commands import train as train_cmd
from twinsearch.encoder.presets import PRESETS, preset
from twinsearch.encoder.training import recipe as recipe_module
from twinsearch.encoder.training.recipe import COLLAPSED_SPREAD
from twinsearch.encoder.training.trainer import distance_spread


def _parse(argv):
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return train_cmd.parse_args(parser, argv)


def _tiny(glyph_tree, out, *extra):
    return _parse(["--data", str(glyph_tree), "--class-depth", "2", "--invert", "--size", "16", "--widths", "8",
                   "16", "--pool", "avg", "--dim", "8", "-P", "4", "-K", "3", "--val-every", "0", "--threads", "1",
                   "--no-progress", "--out", str(out), *extra])


def test_distance_spread_sees_a_collapse():
    rng = np.random.default_rng(0)
    same = np.tile(rng.normal(size=(1, 16)), (50, 1))
    same /= np.linalg.norm(same, axis=1, keepdims=True)
    assert distance_spread(same) == pytest.approx(0.0, abs=1e-6)
    spread = rng.normal(size=(50, 16))
    spread /= np.linalg.norm(spread, axis=1, keepdims=True)
    assert distance_spread(spread) > 0.05


def test_collapse_and_small_validation_are_reported(glyph_tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(recipe_module, "COLLAPSED_SPREAD", 10.0)  # every embedding counts as collapsed
    out = tmp_path / "m.tsm"
    assert train_cmd.run(_tiny(glyph_tree, out, "--steps", "3")) == 0
    err = capsys.readouterr().err
    assert "the embedding has collapsed" in err
    assert "is 2.0-way, not 20-way" in err  # 10% of 12 classes held out: 2 classes
    assert "impostor pairs" in err  # a handful of held-out images cannot set FAR 0.1%
    warnings = read_card(out)["training"]["warnings"]
    assert any("collapsed" in w for w in warnings) and len(warnings) == 3


def test_collapse_advice_names_other_losses_than_the_one_used(glyph_tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(recipe_module, "COLLAPSED_SPREAD", 10.0)
    assert train_cmd.run(_tiny(glyph_tree, tmp_path / "m.tsm", "--steps", "2", "--loss", "triplet")) == 0
    advice = next(line for line in capsys.readouterr().err.splitlines() if "collapsed" in line)
    assert "--loss prototypical," in advice and "triplet" not in advice


def test_a_healthy_run_has_no_collapse_warning(glyph_tree, tmp_path, capsys):
    out = tmp_path / "m.tsm"
    assert train_cmd.run(_tiny(glyph_tree, out, "--steps", "3")) == 0
    assert "collapsed" not in capsys.readouterr().err
    assert read_card(out)["evaluation"]["distance_spread"] > COLLAPSED_SPREAD


def test_steps_per_second_and_too_small_a_budget(glyph_tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(recipe_module, "FEW_STEPS", 10**9)
    assert train_cmd.run(_tiny(glyph_tree, tmp_path / "m.tsm", "--minutes", "0.05", "--val-fraction", "0")) == 0
    err = capsys.readouterr().err
    assert "steps/s" in err and "the budget allows only about" in err


def test_preset_sets_defaults_and_flags_override(tmp_path):
    args = _parse(["--preset", "characters", "--data", "d", "--out", "o", "--size", "48", "--loss", "triplet"])
    assert args.rotations and args.invert and args.classes_per_batch == 60  # from the preset
    assert args.size == [48] and args.loss == "triplet"  # given flags win
    plain = _parse(["--data", "d", "--out", "o"])
    assert not plain.rotations and plain.size == [56] and plain.preset is None
    with pytest.raises(ValueError, match="unknown preset"):
        preset("faces")
    for name, settings in PRESETS.items():  # every preset names real flags
        defaults = vars(_parse(["--data", "d", "--out", "o"]))
        assert set(settings) <= set(defaults), name


def test_train_summary_names_the_way_measured(glyph_tree, tmp_path, capsys):
    assert train_cmd.run(_tiny(glyph_tree, tmp_path / "m.tsm", "--steps", "2")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["oneshot_way"] == 2.0 and summary["evaluated_on"] == "validation split"


def test_one_default_per_loss_parameter_and_zero_is_honoured():
    from twinsearch.encoder.losses import ContrastiveLoss, NormSoftmaxLoss, PrototypicalLoss, TripletLoss
    from twinsearch.encoder.training import TrainConfig
    from twinsearch.encoder.training.trainer import build_loss

    cli = train_cmd._config(_parse(["--data", "d", "--out", "o"]))
    for loss, cls, name in [("prototypical", PrototypicalLoss, "scale"), ("triplet", TripletLoss, "margin"),
                            ("contrastive", ContrastiveLoss, "margin"), ("normsoftmax", NormSoftmaxLoss, "margin")]:
        from_python = build_loss(TrainConfig(loss=loss), 5)
        from_cli = build_loss(train_cmd._config(_parse(["--data", "d", "--out", "o", "--loss", loss])), 5)
        default = inspect.signature(cls).parameters[name].default
        values = [float(m.log_scale.detach().exp()) if name == "scale" else m.margin for m in (from_python, from_cli)]
        assert values == pytest.approx([default, default]), loss
    assert cli.margin is None and cli.scale is None
    assert build_loss(TrainConfig(loss="triplet", margin=0.0), 5).margin == 0.0
    assert build_loss(TrainConfig(loss="contrastive", margin=0.0), 5).margin == 0.0


def test_a_preset_switch_can_be_turned_off():
    args = _parse(["--preset", "characters", "--data", "d", "--out", "o", "--no-rotations", "--no-invert"])
    assert not args.rotations and not args.invert and args.loss == "prototypical"
