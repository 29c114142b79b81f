"""The validation split's cap (`--val-max-images`), and what training reports of its own pace."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

from twinsearch.encoder.commands import train as train_cmd
from twinsearch.encoder.data import capped_per_class, decode_parts, item_indices, load_arrays, open_source
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.encoder.training import TrainConfig
from twinsearch.encoder.training.recipe import Recipe, _split, train_model

PRE = Preprocess(width=16, height=16, invert=True)


def test_the_cap_takes_as_many_from_each_class_as_fit():
    labels = np.repeat([0, 1, 2], [10, 3, 50])
    kept = capped_per_class(labels, 20, seed=0)
    # q = 8 is the largest with min(10, q) + min(3, q) + min(50, q) <= 20
    assert np.bincount(labels[kept]).tolist() == [8, 3, 8]
    assert capped_per_class(labels, 20, seed=0).tolist() == kept.tolist()  # the seed decides
    assert capped_per_class(labels, 20, seed=1).tolist() != kept.tolist()
    assert capped_per_class(labels, len(labels), seed=0).all()  # it fits: all of them
    assert capped_per_class(labels, 0, seed=0).all()  # 0: no limit
    # Never fewer than 2 a class, one-shot's least: a limit below that is passed.
    assert np.bincount(labels[capped_per_class(labels, 1, seed=0)]).tolist() == [2, 2, 2]


def _recipe(glyph_tree, val_by: str, fraction: float, cap: int) -> Recipe:
    return Recipe(data=glyph_tree, preprocess=PRE, config=TrainConfig(seed=0, steps=1), name="cap", class_depth=2,
                  val_fraction=fraction, val_by=val_by, val_max_images=cap)


def _rows(arrays) -> set:
    return {a.tobytes() for a in arrays.images}


def test_held_out_classes_keep_their_classes_under_the_cap(glyph_tree):
    everything = load_arrays(open_source(glyph_tree, class_depth=2), PRE)
    train, whole = _split(_recipe(glyph_tree, "classes", 0.34, 0), everything)
    capped_train, capped = _split(_recipe(glyph_tree, "classes", 0.34, 10), everything)
    classes = len(np.unique(whole.labels))
    assert len(whole) == 6 * classes > 10
    # 2 of each held-out class's 6 images fit under 10; the training side does not change.
    assert np.bincount(capped.labels).tolist() == [2] * classes
    assert _rows(capped) <= _rows(whole) and _rows(capped_train) == _rows(train)


def test_held_out_images_past_the_cap_go_back_to_training(glyph_tree):
    everything = load_arrays(open_source(glyph_tree, class_depth=2), PRE)
    train, whole = _split(_recipe(glyph_tree, "images", 0.5, 0), everything)
    capped_train, capped = _split(_recipe(glyph_tree, "images", 0.5, 24), everything)
    assert len(whole) > 24 and len(capped) <= 24
    assert _rows(capped) <= _rows(whole) and _rows(train) < _rows(capped_train)
    assert len(capped_train) + len(capped) == len(everything)


@pytest.mark.parametrize("val_by, fraction, cap", [("classes", 0.34, 10), ("images", 0.5, 24), ("classes", 0.0, 0)])
def test_parts_decoded_after_the_split_equal_a_split_of_everything(glyph_tree, val_by, fraction, cap):
    """Training draws the split on the labels and decodes each part into place: the same arrays as decoding
    everything and splitting it, without the whole beside the parts."""
    source = open_source(glyph_tree, class_depth=2)
    recipe = _recipe(glyph_tree, val_by, fraction, cap)
    expected = [p for p in _split(recipe, load_arrays(source, PRE)) if p is not None]
    indexed = [p for p in _split(recipe, item_indices(source)) if p is not None]
    for got, want in zip(decode_parts(source, PRE, indexed), expected, strict=True):
        assert got.images.dtype == np.float32 and np.array_equal(got.images, want.images)
        assert np.array_equal(got.labels, want.labels) and got.classes == want.classes
        assert got.summary == want.summary


def test_only_the_images_of_the_parts_are_decoded_once_each(glyph_tree, monkeypatch):
    source = open_source(glyph_tree, class_depth=2)
    decoded = []
    real = Preprocess.to_unit
    monkeypatch.setattr(Preprocess, "to_unit", lambda self, raw, *a: decoded.append(raw) or real(self, raw, *a))
    train, capped = _split(_recipe(glyph_tree, "classes", 0.34, 10), item_indices(source))
    decode_parts(source, PRE, [train, capped])
    assert len(decoded) == len(train) + len(capped) < len(source)  # the capped-off held-out images are not
    with pytest.raises(ValueError, match="one part at most"):
        decode_parts(source, PRE, [train, train])


def test_the_command_and_the_library_cap_alike():
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = train_cmd.parse_args(parser, ["--data", "x", "--steps", "1", "--out", "m.tsm"])
    assert args.val_max_images == Recipe.val_max_images > 0
    wrong = train_cmd.parse_args(parser, ["--data", "x", "--steps", "1", "--out", "m.tsm", "--val-max-images", "-1"])
    assert train_cmd.run(wrong) == 2


def test_the_pace_counts_the_images_each_step_really_had(glyph_tree):
    """The sampler takes no more classes a batch than training has: 8 of the 12 here (4 held out), 2 images
    each, so about 16 images a step, not the 20 x 2 asked for."""
    config = TrainConfig(backbone_args={"widths": [8, 16], "pool": "avg"}, dim=8, classes_per_batch=20,
                         images_per_class=2, steps=30, val_every=0, augment=None, threads=1)
    events = []
    train_model(Recipe(data=glyph_tree, preprocess=PRE, config=config, name="pace", class_depth=2,
                       val_fraction=0.34, eval_episodes=10), events=events.append)
    steps = [e for e in events if e["kind"] == "step"]
    assert {e["images"] for e in steps} == {16}
    speed = [e["text"] for e in events if e["kind"] == "speed"]
    assert len(speed) == 1
    rate, images = map(float, re.match(r"([\d.]+) steps/s \(about (\d+) images/s\)", speed[0]).groups())
    assert images / rate == pytest.approx(16, rel=0.05)
    stages = [e["text"] for e in events if e["kind"] == "stage"]  # what the progress bar shows meanwhile
    assert any(t.startswith("validating") for t in stages) and any(t.startswith("calibrating") for t in stages)
