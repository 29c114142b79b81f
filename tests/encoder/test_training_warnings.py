"""Training that cannot fail silently: collapse, too few validation classes, too little calibration, too
few steps for the budget, and the preset mechanism of `twinsearch train`."""

from __future__ import annotations

import argparse
import inspect
import json

import numpy as np
import pytest
import torch

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


def test_slow_steps_are_reported_early(glyph_tree, tmp_path, capsys, monkeypatch):
    """Steps slower than SPEED_SECONDS for the timed ones are reported after two of them, not after
    SPEED_STEPS (at 15 s a step, a 5-minute budget would end before the report)."""
    monkeypatch.setattr(recipe_module, "SPEED_SECONDS", 0.0)
    steps = recipe_module.SPEED_FROM_STEP + 3
    assert steps < recipe_module.SPEED_STEPS
    out = tmp_path / "m.tsm"
    assert train_cmd.run(_tiny(glyph_tree, out, "--minutes", "5", "--steps", str(steps), "--val-fraction", "0")) == 0
    assert capsys.readouterr().err.count("steps/s (about") == 1  # once, though a third step was timed


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


def test_a_preset_backbone_flags_go_with_its_backbone():
    from twinsearch.encoder.heads import build_net
    from twinsearch.encoder.preprocess import Preprocess
    from twinsearch.encoder.training.trainer import architecture_for

    args = _parse(["--preset", "signatures", "--backbone", "resnet", "--data", "d", "--out", "o"])
    assert args.pool is None and args.widths == [32, 64, 96, 128]  # conv4's pooling dropped, widths kept
    assert train_cmd.backbone_flag_error(args) is None
    for name in PRESETS:
        for backbone in ("conv4", "koch", "signet", "resnet"):
            args = _parse(["--preset", name, "--backbone", backbone, "--data", "d", "--out", "o"])
            assert train_cmd.backbone_flag_error(args) is None, (name, backbone)
            height, width = args.size[0], args.size[-1]
            preprocess = Preprocess(width=width, height=height, channels=args.channels)
            try:
                net = build_net(architecture_for(train_cmd._config(args), preprocess))
            except ValueError as exc:  # only the fixed towers refuse, and only inputs too small for them
                assert backbone in ("koch", "signet") and min(height, width) < 65, (name, backbone)
                assert f"too small for the {backbone} backbone" in str(exc)
                continue
            assert net(torch.zeros(2, args.channels, height, width)).shape == (2, args.dim), (name, backbone)


def test_backbone_flags_given_by_hand_must_fit_the_backbone(glyph_tree, tmp_path, capsys):
    args = _parse(["--data", str(glyph_tree), "--backbone", "resnet", "--pool", "avg", "--out", str(tmp_path / "m")])
    assert train_cmd.run(args) == 2
    assert "--pool applies to the conv4 backbone, not resnet" in capsys.readouterr().err
    args = _parse(["--data", str(glyph_tree), "--backbone", "koch", "--widths", "8", "--out", str(tmp_path / "m")])
    assert train_cmd.run(args) == 2
    assert "--widths applies to the conv4 and resnet backbones, not koch" in capsys.readouterr().err


def test_an_input_too_small_for_the_backbone_is_refused_before_decoding(glyph_tree, tmp_path, capsys, monkeypatch):
    from twinsearch.encoder.training import recipe

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded the data before checking the backbone")

    monkeypatch.setattr(recipe, "decode_parts", no_decoding)
    args = _parse(["--data", str(glyph_tree), "--class-depth", "2", "--backbone", "koch", "--size", "32",
                   "--steps", "1", "--no-progress", "--out", str(tmp_path / "m.tsm")])
    assert train_cmd.run(args) == 2
    assert "32 x 32 pixels is too small for the koch backbone (designed for 105 x 105)" in capsys.readouterr().err


def test_the_koch_tower_takes_wide_inputs():
    from twinsearch.encoder.backbones import build_backbone

    square, wide = build_backbone("koch", input_size=96), build_backbone("koch", input_size=96, input_width=192)
    norms = [m for m in wide.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and wide.training  # probing the size left the statistics and the mode as they were
    assert all(bool((m.running_var == 1).all()) and int(m.num_batches_tracked) == 0 for m in norms)
    assert wide(torch.zeros(2, 1, 96, 192)).shape == (2, wide.out_features)
    assert wide.out_features > square.out_features


def test_bf16_only_where_the_hardware_has_it(monkeypatch):
    """`auto` is bf16 only on hardware that computes it (torch emulates it elsewhere, many times slower);
    the presets ask for `auto`, never for bf16 itself."""
    from twinsearch.encoder.training import trainer as trainer_module

    cpu = torch.device("cpu")
    for avx512_bf16, amx, want in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert trainer_module.native_bf16(cpu) is want
        assert trainer_module.resolve_precision("auto", cpu) == ("bf16" if want else "fp32")
        assert trainer_module.resolve_precision("bf16", cpu) == "bf16"  # asked for: kept, and warned about
        assert trainer_module.resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the probes: fp32
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert trainer_module.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert trainer_module.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert trainer_module.resolve_precision("auto", torch.device("mps")) == "fp32"
    for name, settings in PRESETS.items():
        assert settings.get("precision", "fp32") in ("fp32", "auto"), name


@pytest.mark.parametrize("native", [False, True])
def test_the_card_records_the_precision_used_and_emulated_bf16_is_warned(glyph_tree, tmp_path, capsys,
                                                                          monkeypatch, native):
    monkeypatch.setattr(recipe_module, "native_bf16", lambda device: native)
    from twinsearch.encoder.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "native_bf16", lambda device: native)
    monkeypatch.setattr(recipe_module, "FEW_STEPS", 10**9)  # the speed warning, with or without bf16 advice
    for precision, used in (("auto", "bf16" if native else "fp32"), ("bf16", "bf16"), ("fp32", "fp32")):
        out = tmp_path / f"{precision}.tsm"
        assert train_cmd.run(_tiny(glyph_tree, out, "--minutes", "0.05", "--val-fraction", "0", "--precision",
                                   precision)) == 0
        err = capsys.readouterr().err
        training = read_card(out)["training"]
        assert training["precision"] == used and training["config"]["precision"] == precision
        emulated = precision == "bf16" and not native
        assert ("torch emulates it" in err) is emulated
        assert any("torch emulates it" in w for w in training["warnings"]) is emulated
        speed = next(line for line in err.splitlines() if "the budget allows only about" in line)
        assert ("--precision bf16" in speed) is (native and used == "fp32")  # never when it is already bf16


def test_the_memory_estimate_counts_float32_images():
    from twinsearch.encoder.preprocess import Preprocess

    warning = recipe_module._decoding_memory_warning
    p = Preprocess(height=96, width=192)
    need = 1000 * 96 * 192 * 4
    assert warning(1000, p, int(need / 0.9) + 1) is None
    assert "1,000 images at 1 x 96 x 192" in warning(1000, p, need)  # within 10% of all there is
    assert warning(10**9, p, None) is None  # unknown: no guess


def test_decoding_that_will_not_fit_is_warned_before_it_starts(glyph_tree, tmp_path, capsys, monkeypatch):
    told_before = []
    real = recipe_module.decode_parts

    def decode(*args, **kwargs):
        told_before.append("GiB of memory" in capsys.readouterr().err)
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe_module, "_available_memory", lambda: 1000)
    monkeypatch.setattr(recipe_module, "decode_parts", decode)
    out = tmp_path / "m.tsm"
    assert train_cmd.run(_tiny(glyph_tree, out, "--steps", "2")) == 0
    assert told_before == [True]
    assert any("GiB of memory" in w for w in read_card(out)["training"]["warnings"])


def test_collapse_advice_leaves_out_what_the_run_already_did(glyph_tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(recipe_module, "COLLAPSED_SPREAD", 10.0)
    assert train_cmd.run(_tiny(glyph_tree, tmp_path / "m.tsm", "--steps", "2")) == 0
    advice = next(line for line in capsys.readouterr().err.splitlines() if "collapsed" in line)
    assert "--margin" not in advice and "a --preset" in advice  # the loss's own margin was used; no preset
    assert train_cmd.run(_tiny(glyph_tree, tmp_path / "n.tsm", "--steps", "2", "--margin", "0.5")) == 0
    advice = next(line for line in capsys.readouterr().err.splitlines() if "collapsed" in line)
    assert "the loss's default --margin" in advice


def test_the_step_estimate_follows_the_first_convolution():
    from twinsearch.encoder.preprocess import Preprocess

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, stride=2, padding=1), torch.nn.Conv2d(8, 64, 3))
    p = Preprocess(height=100, width=200)
    need = recipe_module.STEP_MEMORY_FACTOR * 32 * 8 * 50 * 100 * 4  # batch x channels x (H/2) x (W/2) x 4 bytes
    warning = recipe_module._step_memory_warning
    assert warning(net, p, 32, 0, int(need / 0.9) + 1) is None
    assert "a training step of 32 images at 100 x 200" in warning(net, p, 32, 0, need)
    assert warning(net, p, 32, need, int(need / 0.9) + 1) is not None  # beside the decoded images
    assert warning(net, p, 32, 0, None) is None


def test_a_step_that_will_not_fit_is_warned_before_decoding(glyph_tree, tmp_path, capsys, monkeypatch):
    told_before = []
    real = recipe_module.decode_parts

    def decode(*args, **kwargs):
        told_before.append("network's activations" in capsys.readouterr().err)
        return real(*args, **kwargs)

    # room for the decoded images (48 of 1 x 16 x 16), none for a step at that size
    monkeypatch.setattr(recipe_module, "_available_memory", lambda: 2 * 48 * 16 * 16 * 4)
    monkeypatch.setattr(recipe_module, "decode_parts", decode)
    assert train_cmd.run(_tiny(glyph_tree, tmp_path / "m.tsm", "--steps", "1")) == 0
    assert told_before == [True]
