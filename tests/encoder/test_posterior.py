"""The class posterior appended to embeddings for closed-set data (heads.ClassPosterior)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from twinsearch.encoder.commands import train as train_cmd
from twinsearch.encoder.data import load_arrays, open_source
from twinsearch.encoder.heads import ClassPosterior, build_net
from twinsearch.encoder.model import EncoderModel, load_model
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.encoder.training import TrainConfig, Trainer

PRE = Preprocess(width=16, height=16, invert=True)


def test_squared_distance_splits_into_features_and_bhattacharyya():
    gen = torch.Generator().manual_seed(0)
    post = ClassPosterior(num_classes=5, dim=6, weight=0.7, temperature=4.0)
    post.proxies.copy_(torch.randn(5, 6, generator=gen))
    f = F.normalize(torch.randn(2, 6, generator=gen), dim=1)
    out = post(f)
    assert out.shape == (2, 11)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    p = torch.softmax(4.0 * f @ F.normalize(post.proxies, dim=1).T, dim=1)
    bc = (p[0] * p[1]).sqrt().sum()
    expected = 0.3 * (f[0] - f[1]).pow(2).sum() + 0.7 * 2 * (1 - bc)
    assert float((out[0] - out[1]).pow(2).sum()) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(("weight", "temperature"), [(0.0, 1.0), (1.5, 1.0), (0.5, 0.0)])
def test_bad_posterior_settings_are_refused(weight, temperature):
    with pytest.raises(ValueError, match="posterior"):
        ClassPosterior(3, 4, weight, temperature)


def test_architecture_with_posterior_builds_and_round_trips(tmp_path):
    arch = {"backbone": "conv4", "backbone_args": {"input_size": 16, "widths": [4, 4], "pool": "avg"}, "dim": 8,
            "posterior": {"classes": 3, "weight": 0.5, "temperature": 10.0}}
    net = build_net(arch)
    assert net.dim == 11 and "posterior.proxies" in net.state_dict()
    net.posterior.proxies.copy_(torch.randn(3, 8))
    model = EncoderModel.create(net, arch, PRE, "p")
    model.save(tmp_path / "p.tsm")
    loaded = load_model(tmp_path / "p.tsm", device="cpu")
    x = np.random.default_rng(0).random((4, 1, 16, 16), dtype=np.float32)
    assert loaded.dim == 11
    assert np.array_equal(loaded.embed_arrays(x), model.embed_arrays(x))
    # training mode gives the head's embedding alone: the loss sees what it trains
    net.train()
    assert net(torch.from_numpy(x)).shape == (4, 8)


def _split_by_images(glyph_tree):
    data = load_arrays(open_source(glyph_tree, class_depth=2), PRE)
    mask = np.zeros(len(data), dtype=bool)
    mask[::3] = True
    return data.subset_images(~mask), data.subset_images(mask), data


def test_trainer_fits_the_temperature_on_validation_images(glyph_tree):
    train, val, data = _split_by_images(glyph_tree)
    cfg = TrainConfig(backbone_args={"widths": [8, 16], "pool": "avg"}, dim=8, loss="normsoftmax", scale=10.0,
                      steps=12, classes_per_batch=6, images_per_class=2, val_every=6, val_way=5, val_episodes=10,
                      posterior_weight=0.75, augment=None)
    trainer = Trainer(cfg, PRE, train, val, device="cpu")
    result = trainer.fit()
    post = result.architecture["posterior"]
    assert post["classes"] == data.num_classes and post["weight"] == 0.75 and 1.0 <= post["temperature"] <= 100.0
    assert result.net.dim == 8 + data.num_classes
    emb = trainer._embed(result.net, val.images)
    assert emb.shape == (len(val), 8 + data.num_classes)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the chosen temperature minimises the validation NLL: worse at half and at double
    feats = torch.from_numpy(emb[:, :8]) / 0.25 ** 0.5
    cos = feats @ F.normalize(result.net.posterior.proxies, dim=1).T
    labels = torch.from_numpy(val.labels)

    def nll(t):
        return float(F.cross_entropy(t * cos, labels))

    t = post["temperature"]
    assert nll(t) == pytest.approx(post["validation_nll"], abs=1e-3)
    if t > 1.0:
        assert nll(t) <= nll(t / 2)
    if t < 100.0:
        assert nll(t) <= nll(t * 2)


def test_trainer_refuses_a_posterior_it_cannot_fit(glyph_tree):
    train, val, data = _split_by_images(glyph_tree)
    base = dict(backbone_args={"widths": [8, 16], "pool": "avg"}, dim=8, steps=2, posterior_weight=0.5)
    with pytest.raises(ValueError, match="normsoftmax"):
        Trainer(TrainConfig(**base, loss="prototypical"), PRE, train, val, device="cpu")
    with pytest.raises(ValueError, match="validation images of the training classes"):
        Trainer(TrainConfig(**base, loss="normsoftmax"), PRE, train, None, device="cpu")
    held_out = data.subset_classes(np.arange(8, 12))
    with pytest.raises(ValueError, match="validation images of the training classes"):
        Trainer(TrainConfig(**base, loss="normsoftmax"), PRE, data.subset_classes(np.arange(8)), held_out,
                device="cpu")


def test_train_command_refuses_a_posterior_without_validation_images(glyph_tree, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["--data", str(glyph_tree), "--class-depth", "2", "--size", "16", "--steps", "2",
                              "--loss", "normsoftmax", "--posterior-weight", "0.5", "--out", str(tmp_path / "m.tsm"),
                              "--no-progress"])
    assert train_cmd.run(args) == 2
    assert "--val-by images" in capsys.readouterr().err
    assert not (tmp_path / "m.tsm").exists()
