"""`twinsearch train --init MODEL`: training that starts from another model's weights."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from twinsearch.encoder.card import read_card
from twinsearch.encoder.commands import train as train_cmd
from twinsearch.encoder.data import load_arrays, open_source
from twinsearch.encoder.model import read_weights
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.encoder.training import TrainConfig, Trainer
from twinsearch.encoder.training.recipe import Recipe, train_model
from twinsearch.encoder.training.trainer import start_from

TINY = ["--widths", "8", "16", "--pool", "avg"]


def _train(glyph_tree, out, *extra):
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["--data", str(glyph_tree), "--class-depth", "2", "--size", "16", "--invert", *TINY,
                              "--dim", "8", "-P", "4", "-K", "2", "--steps", "4", "--val-every", "2",
                              "--val-fraction", "0.34", "--eval-episodes", "10", "--threads", "2", "--no-graph",
                              "--no-progress", "--out", str(out), *extra])
    return train_cmd.run(args)


@pytest.fixture(scope="module")
def base_model(glyph_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("init") / "base.tsm"
    assert _train(glyph_tree, out, "--seed", "3") == 0
    return out


def test_training_starts_from_the_models_weights_at_another_input_size(glyph_tree, base_model):
    """With a learning rate of 0 nothing moves, so the trained weights are the initial model's: the backbone
    all of it, here at a wider input than it was trained on; the head too where its shape fits."""
    _, weights = read_weights(base_model)
    data = load_arrays(open_source(glyph_tree, class_depth=2), Preprocess(width=32, height=16, invert=True))
    for dim, head_kept in ((8, True), (12, False)):
        cfg = TrainConfig(backbone_args={"widths": [8, 16], "pool": "avg"}, dim=dim, steps=2, classes_per_batch=4,
                          images_per_class=2, val_every=0, lr=0.0, augment=None)
        result = Trainer(cfg, Preprocess(width=32, height=16, invert=True), data, device="cpu",
                         init_weights=weights).fit()
        trained = result.net.state_dict()
        for name, tensor in trained.items():
            if name.endswith(".weight") and name.startswith("backbone."):
                assert torch.equal(tensor, weights[name]), name
        assert torch.equal(trained["head.linear.weight"], weights["head.linear.weight"]) if head_kept else \
            trained["head.linear.weight"].shape != weights["head.linear.weight"].shape


def test_a_backbone_that_does_not_fit_is_refused_with_what_differs(base_model):
    from twinsearch.encoder.heads import build_net

    _, weights = read_weights(base_model)
    net = build_net({"backbone": "conv4", "backbone_args": {"widths": [8, 32], "pool": "avg", "in_channels": 1,
                                                             "input_size": 16}, "dim": 8, "head_args": {}})
    with pytest.raises(ValueError, match=r"backbone does not fit .*--widths"):
        start_from(net, weights)


def test_the_command_records_the_initial_model_and_refuses_a_misfit_before_decoding(glyph_tree, base_model,
                                                                                     tmp_path, capsys):
    out = tmp_path / "tuned.tsm"
    assert _train(glyph_tree, out, "--init", str(base_model)) == 0
    capsys.readouterr()
    base, tuned = read_card(base_model), read_card(out)
    assert tuned["training"]["init"] == {"model": str(base_model), "name": "base",
                                         "fingerprint": base["fingerprint"]}
    assert base["training"]["init"] is None

    missing = tmp_path / "none.tsm"
    assert _train(glyph_tree, tmp_path / "x.tsm", "--init", str(missing)) == 2
    assert str(missing) in capsys.readouterr().err

    assert _train(glyph_tree, tmp_path / "y.tsm", "--init", str(base_model), "--widths", "8", "32") == 2
    assert "backbone does not fit" in capsys.readouterr().err
    assert not (tmp_path / "y.tsm").exists()
    events = []  # told before a single image is decoded
    recipe = Recipe(data=glyph_tree, preprocess=Preprocess(width=16, height=16, invert=True), name="y",
                    config=TrainConfig(backbone_args={"widths": [8, 32], "pool": "avg"}, dim=8, steps=2),
                    class_depth=2, init=base_model)
    with pytest.raises(ValueError, match="backbone does not fit"):
        train_model(recipe, events=events.append)
    assert not [e for e in events if e["kind"] == "decode"]


def test_a_resumed_run_keeps_its_own_weights(glyph_tree, base_model, tmp_path, capsys):
    """--resume continues the checkpoint's weights; the initial model only seeds a fresh start."""
    out = tmp_path / "r.tsm"
    assert _train(glyph_tree, out, "--init", str(base_model)) == 0
    first = json.loads(capsys.readouterr().out)
    assert _train(glyph_tree, out, "--init", str(base_model), "--resume") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["steps"] == first["steps"] == 4 and again["fingerprint"] == first["fingerprint"]
