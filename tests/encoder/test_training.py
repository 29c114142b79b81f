from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from twinsearch.encoder.augment import RandomAffine, expand_rotations
from twinsearch.encoder.card import read_card
from twinsearch.encoder.commands import evaluate as evaluate_cmd
from twinsearch.encoder.commands import train as train_cmd
from twinsearch.encoder.data import load_arrays, open_source
from twinsearch.encoder.heads import build_net
from twinsearch.encoder.model import load_model
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.encoder.training import TrainConfig, Trainer

TINY = {"widths": [8, 16], "pool": "avg"}


def _arrays(glyph_tree):
    return load_arrays(open_source(glyph_tree, class_depth=2), Preprocess(width=16, height=16, invert=True))


def test_affine_and_rotations():
    x = torch.zeros(4, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1
    gen = torch.Generator().manual_seed(0)
    out = RandomAffine(rotation=20, thickness=1.0)(x, generator=gen)
    assert out.shape == x.shape and not torch.equal(out, x) and out.min() >= -1e-6
    same = RandomAffine(p=0.0, elastic=0.05)(x, generator=gen)
    assert torch.allclose(same, x, atol=1e-5)
    elastic = RandomAffine(rotation=0, shear=0, scale=(1, 1), translate=0, elastic=0.05)(x, generator=gen)
    assert not torch.allclose(elastic, x, atol=1e-3) and float(elastic.sum()) == pytest.approx(float(x.sum()), rel=0.3)
    ramp = torch.linspace(0, 1, 16).expand(1, 1, 16, 16)
    mirrored = RandomAffine(rotation=0, shear=0, scale=(1, 1), translate=0, hflip=1.0)(ramp, generator=gen)
    assert torch.allclose(mirrored, ramp.flip(3), atol=1e-5)
    imgs = np.arange(2 * 16).reshape(2, 1, 4, 4).astype(np.float32)
    big, labels, n = expand_rotations(imgs, np.array([0, 1]), 2)
    assert big.shape == (8, 1, 4, 4) and n == 8 and list(labels) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert np.array_equal(big[2], np.rot90(imgs[0], 1, axes=(1, 2)))
    wide = np.arange(2 * 8).reshape(2, 1, 2, 4).astype(np.float32)  # not square: copies keep the shape
    big, labels, n = expand_rotations(wide, np.array([0, 1]), 2)
    assert big.shape == (8, 1, 2, 4) and n == 8 and list(labels) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert np.array_equal(big[3], wide[1, :, ::-1, ::-1])  # turned 180 degrees
    assert np.array_equal(big[4], wide[0, :, :, ::-1])  # mirrored left to right
    assert np.array_equal(big[7], wide[1, :, ::-1, :])  # mirrored top to bottom


@pytest.mark.parametrize("loss", ["normsoftmax", "prototypical", "triplet", "contrastive", "contrastive-pairs"])
def test_every_loss_trains_a_few_steps(glyph_tree, loss):
    data = _arrays(glyph_tree)
    # No weight decay: then only the loss's gradients can move the weights.
    cfg = TrainConfig(backbone_args=TINY, dim=8, loss=loss, steps=4, classes_per_batch=4, images_per_class=3,
                      val_every=0, seed=1, margin=0.2 if loss == "triplet" else 0.0, weight_decay=0.0)
    losses = []
    result = Trainer(cfg, Preprocess(width=16, height=16, invert=True), data, device="cpu",
                     callback=lambda e: losses.append(e["loss"]) if e["kind"] == "step" else None).fit()
    assert result.steps == 4 and result.net.dim == 8
    assert len(losses) == 4 and all(np.isfinite(losses)) and losses[0] > 0
    torch.manual_seed(cfg.seed)  # the initial weights, as fit() built them
    initial = dict(build_net(result.architecture).named_parameters())
    for name, trained in result.net.named_parameters():
        assert not torch.equal(trained, initial[name]), f"{loss}: {name} was never updated"


def test_bf16_precision_trains_and_keeps_fp32_weights(glyph_tree):
    data = _arrays(glyph_tree)
    cfg = TrainConfig(backbone_args=TINY, dim=8, loss="normsoftmax", steps=3, classes_per_batch=4,
                      images_per_class=3, val_every=0, seed=1, precision="bf16")
    result = Trainer(cfg, Preprocess(width=16, height=16, invert=True), data, device="cpu").fit()
    assert result.steps == 3 and all(p.dtype == torch.float32 for p in result.net.parameters())
    with pytest.raises(ValueError, match="precision"):
        Trainer(TrainConfig(steps=1, precision="fp8"), Preprocess(width=16, height=16), data, device="cpu")


def test_training_is_seeded_and_resumable(glyph_tree, tmp_path):
    data = _arrays(glyph_tree)
    train, val = data.subset_classes(np.arange(8)), data.subset_classes(np.arange(8, 12))
    pre = Preprocess(width=16, height=16, invert=True)
    cfg = TrainConfig(backbone_args=TINY, dim=8, steps=6, classes_per_batch=4, images_per_class=2, val_every=3,
                      val_way=4, val_episodes=10, rotations=True, groups_per_batch=1, tta_shifts=[[1, 0], [0, -1]])
    a = Trainer(cfg, pre, train, val, device="cpu", checkpoint=tmp_path / "a.ckpt").fit()
    b = Trainer(cfg, pre, train, val, device="cpu").fit()
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert [h["step"] for h in a.history] == [3, 6] and a.best_step in (3, 6)
    assert a.architecture["tta_shifts"] == [[1, 0], [0, -1]] and a.net.tta_shifts == [(1, 0), (0, -1)]
    # resume a finished run with a longer budget: continues from step 6; other changes are refused
    longer = TrainConfig(**{**cfg.to_dict(), "steps": 8})
    c = Trainer(longer, pre, train, val, device="cpu", checkpoint=tmp_path / "a.ckpt").fit(resume=True)
    assert c.steps == 8 and [h["step"] for h in c.history] == [3, 6, 8]
    other = TrainConfig(**{**cfg.to_dict(), "lr": 1.0})
    with pytest.raises(ValueError, match="changed: lr"):
        Trainer(other, pre, train, val, device="cpu", checkpoint=tmp_path / "a.ckpt").fit(resume=True)


def _brute_retrieval(emb: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(Recall@1, MAP@R) in float64 numpy, every item a query against all the others."""
    x = emb.astype(np.float64)
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    hits, aps = [], []
    for i in range(len(x)):
        order = np.argsort(d[i], kind="stable")[:-1]  # ties by position, as the report ranks them
        rel = labels[order] == labels[i]
        r = int(rel.sum())
        hits.append(rel[0])
        top = rel[:r]
        aps.append(float((np.cumsum(top) / np.arange(1, r + 1) * top).sum() / r))
    return float(np.mean(hits)), float(np.mean(aps))


def _parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_train_and_evaluate_commands(glyph_tree, tmp_path, capsys):
    out = tmp_path / "m.tsm"
    args = _parse(train_cmd, ["--data", str(glyph_tree), "--class-depth", "2", "--size", "16", "--invert",
                              "--widths", "8", "16", "--pool", "avg", "--dim", "8", "-P", "4", "-K", "2",
                              "--steps", "8", "--val-every", "4", "--val-fraction", "0.34", "--rotations",
                              "--eval-episodes", "20", "--threads", "2", "--out", str(out), "--no-progress"])
    assert train_cmd.run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 8
    card = read_card(out)
    assert card["data"]["train"]["classes"] == 8 and card["data"]["validation"]["classes"] == 4
    assert card["calibration"]["genuine_pairs"] == 4 * 15 and card["training"]["command"].startswith("twinsearch")
    assert "oneshot" in card["evaluation"]
    model = load_model(out, device="cpu")
    assert model.preprocess.invert and model.dim == 8
    assert model.runtime == "onnxruntime"  # the graph is stored by default, and agrees with the weights

    report_path, plots = tmp_path / "r.json", tmp_path / "plots"
    args = _parse(evaluate_cmd, ["--model", str(out), "--data", str(glyph_tree), "--class-depth", "2", "--way", "5",
                                 "--within-group", "--episodes", "30", "--json", str(report_path),
                                 "--plots", str(plots), "--threads", "2"])
    assert evaluate_cmd.run(args) == 0
    text = capsys.readouterr().out
    assert "one-shot" in text and "Recall@1" in text
    report = json.loads(report_path.read_text())
    assert report["data"] == {**report["data"], "images": 72, "classes": 12}
    assert set(report["oneshot"]["per_group"]) == {"group0", "group1"}
    assert report["oneshot"]["accuracy"] > 0.5  # 5-way: chance is 0.2; these glyphs are easy
    for key in ("accuracy", "roc_auc", "eer", "tar_at_far"):
        assert key in report["pairs"]
    assert report["pairs"]["roc_auc"] > 0.8
    # Recall@1 and MAP@R as the report gives them, recomputed by brute force from the model's embeddings
    source = open_source(glyph_tree, class_depth=2)
    emb = model.embed_arrays(np.stack([model.preprocess.load(raw) for _, raw in source.iter_raw()]))
    recall, map_r = _brute_retrieval(emb, source.labels)
    assert report["recall_at_1"] == pytest.approx(recall, abs=1e-12)
    assert report["map_at_r"] == pytest.approx(map_r, abs=1e-12)
    assert sorted(p.name for p in plots.iterdir()) == ["det.png", "distances.png", "roc.png"]


def test_the_library_recipe_is_the_command(glyph_tree, tmp_path, capsys):
    """`train_model(Recipe(...))` gives the model `twinsearch train` writes, bit for bit, with its card."""
    from twinsearch.encoder.preprocess import Preprocess
    from twinsearch.encoder.training import TrainConfig
    from twinsearch.encoder.training.recipe import Recipe, train_model

    out = tmp_path / "cli.tsm"
    args = _parse(train_cmd, ["--data", str(glyph_tree), "--class-depth", "2", "--size", "16", "--invert",
                              "--widths", "8", "16", "--pool", "avg", "--dim", "8", "-P", "4", "-K", "2",
                              "--steps", "6", "--val-every", "3", "--val-fraction", "0.34", "--no-augment",
                              "--eval-episodes", "20", "--threads", "2", "--out", str(out), "--no-progress",
                              "--no-graph"])
    assert train_cmd.run(args) == 0
    printed = json.loads(capsys.readouterr().out)

    config = TrainConfig(backbone_args={"widths": [8, 16], "pool": "avg"}, dim=8, classes_per_batch=4,
                         images_per_class=2, steps=6, val_every=3, augment=None, threads=2)
    events = []
    outcome = train_model(Recipe(data=glyph_tree, preprocess=Preprocess(width=16, height=16, invert=True),
                                 config=config, name="cli", class_depth=2, val_fraction=0.34, eval_episodes=20,
                                 checkpoint=tmp_path / "lib.ckpt"), events=events.append)
    cli = load_model(out, device="cpu")
    assert outcome.model.fingerprint == cli.fingerprint == printed["fingerprint"]
    assert outcome.model.card.calibration == cli.card.calibration
    assert outcome.model.card.evaluation["oneshot"] == cli.card.evaluation["oneshot"]
    timeless = {k: v for k, v in printed.items() if k not in ("model", "elapsed_s")}
    assert {k: v for k, v in outcome.summary().items() if k != "elapsed_s"} == timeless
    kinds = {e["kind"] for e in events}
    assert {"decode", "step", "val"} <= kinds
    assert events[0]["kind"] == "decode" and events[-1]["kind"] in ("step", "val", "warning")


def test_a_weight_average_is_what_is_validated_and_kept(glyph_tree, tmp_path):
    """--ema DECAY keeps an exponential moving average of the weights: a decay near 0 is the last step's
    weights, one near 1 stays at the first step's (here the seeded initial weights: the learning rate
    warms up from 0), and training itself is the same either way."""
    from twinsearch.encoder.training.trainer import architecture_for

    data = _arrays(glyph_tree)
    pre = Preprocess(width=16, height=16, invert=True)

    def fit(ema, **kw):
        cfg = TrainConfig(backbone_args=TINY, dim=8, steps=4, classes_per_batch=4, images_per_class=2, val_every=0,
                          lr=0.05, ema=ema, **kw)
        return Trainer(cfg, pre, data, device="cpu", checkpoint=tmp_path / f"{ema}.ckpt").fit().net.state_dict()

    plain, last, first = fit(0.0), fit(1e-12), fit(1 - 1e-9)
    torch.manual_seed(0)
    initial = build_net(architecture_for(TrainConfig(backbone_args=TINY, dim=8), pre)).state_dict()
    for name, tensor in plain.items():
        if tensor.is_floating_point():
            assert torch.allclose(last[name], tensor, atol=1e-6), name
    moved = [name for name, tensor in plain.items() if name.endswith("weight") and
             not torch.allclose(tensor, initial[name], atol=1e-4)]
    assert moved
    for name in moved:
        assert torch.allclose(first[name], initial[name], atol=1e-5), name
    # a resumed run carries its average on
    cfg = TrainConfig(backbone_args=TINY, dim=8, steps=6, classes_per_batch=4, images_per_class=2, val_every=0,
                      ema=0.9)
    Trainer(cfg, pre, data, device="cpu", checkpoint=tmp_path / "r.ckpt").fit()
    longer = TrainConfig(**{**cfg.to_dict(), "steps": 8})
    assert Trainer(longer, pre, data, device="cpu", checkpoint=tmp_path / "r.ckpt").fit(resume=True).steps == 8
    with pytest.raises(ValueError, match="--ema"):
        Trainer(TrainConfig(steps=1, ema=1.0), pre, data, device="cpu")


@pytest.mark.parametrize("val_by", ["classes", "images"])
def test_the_split_seed_draws_the_validation_split_apart_from_the_training_seed(glyph_tree, val_by):
    """Runs of several training seeds can hold out the same validation data (`--split-seed`); without it
    the training seed draws the split, as before."""
    from twinsearch.encoder.training.recipe import Recipe, _split

    everything = _arrays(glyph_tree)

    def held_out(seed, split_seed=None):
        recipe = Recipe(data=glyph_tree, preprocess=Preprocess(width=16, height=16, invert=True),
                        config=TrainConfig(seed=seed, steps=1), name="s", class_depth=2, val_fraction=0.34,
                        val_by=val_by, split_seed=split_seed)
        _, val = _split(recipe, everything)
        return val.images.reshape(len(val.images), -1).sum(1).round(3).tolist()

    by_seed = {seed: held_out(seed) for seed in range(6)}
    assert len({tuple(v) for v in by_seed.values()}) > 1  # the training seed moves the split by default
    for seed in range(6):
        assert held_out(seed, split_seed=3) == by_seed[3]


def test_the_card_records_the_split_seed(glyph_tree, tmp_path, capsys):
    out = tmp_path / "m.tsm"
    args = _parse(train_cmd, ["--data", str(glyph_tree), "--class-depth", "2", "--size", "16", "--invert",
                              "--widths", "8", "16", "--dim", "8", "-P", "4", "-K", "2", "--steps", "2",
                              "--val-every", "0", "--val-fraction", "0.34", "--seed", "1", "--split-seed", "4",
                              "--eval-episodes", "10", "--threads", "2", "--out", str(out), "--no-progress",
                              "--no-graph"])
    assert train_cmd.run(args) == 0
    capsys.readouterr()
    card = read_card(out)
    assert card["data"]["validation"]["split_seed"] == 4 and card["training"]["config"]["seed"] == 1
