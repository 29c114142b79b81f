"""Skilled forgeries: the NNN/ + NNN_forg/ folder convention, batches that put a writer's forgeries beside
it, losses that never take a forgery as a positive, reference-based evaluation, calibration on skilled
forgeries, and `train`/`evaluate` end to end on a small synthetic signature set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from twinsearch.encoder.card import read_card
from twinsearch.encoder.commands import evaluate as evaluate_cmd
from twinsearch.encoder.commands import train as train_cmd
from twinsearch.encoder.data import load_arrays, open_source
from twinsearch.encoder.errors import DataError
from twinsearch.encoder.evaluation.metrics import verification
from twinsearch.encoder.evaluation.references import (
    COHORT_POWER,
    class_distance,
    cohort_normalized,
    eer_interval,
    reference_distances,
    reference_report,
)
from twinsearch.encoder.evaluation.report import calibrate, forgery_pair_distances
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.encoder.samplers import PKSampler
from twinsearch.encoder.training.trainer import loss_labels

from .test_ink import scribble


@pytest.fixture(scope="module")
def signature_tree(tmp_path_factory):
    """root/wNN/ (8 genuine) and root/wNN_forg/ (6 forgeries) for 10 writers. A writer's genuine images are
    its scribble with small jitter; forgeries are the same scribble with larger distortions, on a whiter page."""
    root = tmp_path_factory.mktemp("signatures")
    for w in range(10):
        base = scribble(w)
        for kind, count, jitter, background in (("", 8, 1, 241), ("_forg", 6, 4, 255)):
            folder = root / f"w{w:02d}{kind}"
            folder.mkdir()
            for i in range(count):
                rng = np.random.default_rng(1000 * w + 100 * len(kind) + i)
                img = np.roll(base, tuple(rng.integers(-jitter, jitter + 1, size=2)), axis=(0, 1))
                if kind:
                    img = np.roll(img, int(rng.integers(-jitter, jitter + 1)), axis=1)
                    img[:, ::7] = np.minimum(img[:, ::7], np.roll(img, 3, axis=0)[:, ::7])
                img = np.where(img == 255, background, img).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def test_folder_convention_marks_forgeries(signature_tree):
    src = open_source(signature_tree, forgery_suffix="_forg")
    assert src.forges is not None
    assert (src.forges >= 0).sum() == 10
    for c, name in enumerate(src.classes):
        if name.endswith("_forg"):
            assert src.classes[src.forges[c]] == name[:-5]
        else:
            assert src.forges[c] == -1
    s = src.summary()
    assert s["classes"] == 10 and s["forgery_classes"] == 10 and s["forgeries"] == 60
    assert open_source(signature_tree).forges is None  # no suffix: every folder is a class


def test_forgeries_need_their_writer(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b_forg").mkdir()
    Image.new("L", (8, 8), 0).save(tmp_path / "a" / "0.png")
    Image.new("L", (8, 8), 0).save(tmp_path / "b_forg" / "0.png")
    with pytest.raises(DataError, match="b_forg.*no folder of genuine images"):
        open_source(tmp_path, forgery_suffix="_forg")


def test_split_keeps_forgeries_with_their_writer(signature_tree):
    arrays = load_arrays(open_source(signature_tree, forgery_suffix="_forg"), Preprocess(width=8, height=8))
    train, val = arrays.split_genuine_classes(0.3, seed=0)
    for part in (train, val):
        names = set(part.classes)
        forged = [n for n in names if n.endswith("_forg")]
        assert forged and all(n[:-5] in names for n in forged)
        assert all(part.classes[part.forges[c]] + "_forg" == part.classes[c]
                   for c in range(part.num_classes) if part.forges[c] >= 0)
    assert not set(train.classes) & set(val.classes)
    assert len(train) + len(val) == len(arrays)
    # Capped (`--val-max-images`), each writer keeps genuine images and forgeries alike, and the summary
    # counts what is left.
    from twinsearch.encoder.data import capped_per_class

    capped = val.subset_images(capped_per_class(val.labels, 12, seed=0))
    assert np.bincount(capped.labels, minlength=val.num_classes).tolist() == [2] * val.num_classes
    assert capped.summary["images"] == 12 and capped.summary["forgeries"] == 6


def test_batches_bring_each_writers_forgeries():
    labels = np.repeat(np.arange(6), 5)  # classes 0-2 genuine, 3-5 forgeries of 0-2
    forges = np.array([-1, -1, -1, 0, 1, 2])
    batch = next(iter(PKSampler(labels, 2, 3, seed=0, forges=forges)))
    classes = labels[batch]
    assert len(batch) == 12
    genuine = sorted(set(classes[:6].tolist()))
    assert all(c < 3 for c in genuine)
    assert sorted(set(classes[6:].tolist())) == [c + 3 for c in genuine]  # their forgeries, K each
    with pytest.raises(ValueError):
        PKSampler(labels, 4, 2, forges=forges)  # only 3 genuine classes to draw from


def test_a_forgery_is_never_a_positive():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # class 2 forges 0, class 3 forges 1
    forges = np.array([-1, -1, 0, 1])
    out = loss_labels(labels, forges, "triplet")
    assert list(out[:4]) == [0, 0, 1, 1]
    assert len(set(out[4:].tolist())) == 4 and not set(out[4:].tolist()) & {0, 1}
    assert list(loss_labels(labels, forges, "normsoftmax")) == list(labels)  # a proxy per forged writer
    assert list(loss_labels(labels, None, "triplet")) == list(labels)


def test_reference_scoring_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(14, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0] * 5 + [1] * 5 + [2] * 4)  # class 2 forges class 0
    forges = np.array([-1, -1, 0])
    raw = reference_distances(emb, labels, forges, references=3, seed=1)
    assert raw["classes"] == 2
    assert raw["genuine"].size == 2 * 2 and raw["skilled"].size == 4 and raw["random"].size == 5 + 5
    refs = emb[:3]
    d = np.linalg.norm(emb[[3, 4]][:, None] - refs[None], axis=2)
    assert np.allclose(class_distance(emb[[3, 4]], refs), d.min(1))
    assert np.allclose(class_distance(emb[[3, 4]], refs, "mean_of_k", 2), np.sort(d, 1)[:, :2].mean(1))
    proto = refs.mean(0) / np.linalg.norm(refs.mean(0))
    assert np.allclose(class_distance(emb[[3, 4]], refs, "prototype"), np.linalg.norm(emb[[3, 4]] - proto, axis=1))
    report, _ = reference_report(emb, labels, forges, 3, threshold=1.0, seed=1)
    assert report["count"] == 3 and 0 <= report["skilled_eer"] <= 1 and report["frr"] == pytest.approx(
        float((raw["genuine"] > 1.0).mean()))
    none, _ = reference_report(emb, labels, forges, 5)
    assert none["classes"] == 0 and none["skilled_eer"] is None and none["skilled_eer_ci95"] is None
    assert np.array_equal(raw["genuine_class"], [0, 0, 1, 1]) and np.array_equal(raw["skilled_class"], [0] * 4)


def test_calibration_uses_skilled_forgeries():
    # writer 0 at (1, 0), its forgeries close by; writer 1 far away
    emb = np.array([[1, 0], [0.99, 0.14], [0.95, 0.31], [0.8, 0.6], [-1, 0], [-0.99, 0.14]], dtype=np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0, 0, 2, 2, 1, 1])
    forges = np.array([-1, -1, 0])
    g, skilled = forgery_pair_distances(emb, labels, forges)
    assert g.size == 2 and skilled.size == 4
    cal = calibrate(emb, labels, forges=forges)
    assert cal.impostor_pairs == 4  # the skilled pairs, not the far-away other writer
    plain = calibrate(emb, labels)
    assert plain.impostor_pairs != 4


def test_train_and_evaluate_signatures_end_to_end(signature_tree, tmp_path, capsys):
    out = tmp_path / "sig.tsm"
    parser = train_cmd.argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = train_cmd.parse_args(parser, [
        "--preset", "signatures", "--data", str(signature_tree), "--size", "24", "48", "--widths", "8", "16",
        "--dim", "16", "--steps", "6", "-P", "4", "-K", "3", "--val-fraction", "0.3", "--val-every", "3",
        "--precision", "fp32", "--threads", "1", "--out", str(out), "--no-progress"])
    assert args.binarize == "otsu" and args.size == [24, 48] and args.widths == [8, 16]  # preset + overrides
    assert train_cmd.run(args) == 0
    card = read_card(out)
    assert card["training"]["preset"] == "signatures"
    assert card["architecture"]["orientations"] == {"weight": 0.65, "cells": [1, 2], "bins": 8}
    assert card["preprocess"]["height"] == 24 and card["preprocess"]["width"] == 48
    assert card["preprocess"]["background_removal"] == "otsu" and card["preprocess"]["crop_to_ink"]
    assert card["training"]["history"][-1]["score_name"] == "1 - val_skilled_eer"
    refs = card["evaluation"]["references"]
    assert refs["skilled_forgeries"] > 0 and 0 <= refs["skilled_eer"] <= 1
    # calibrated on skilled pairs: 3 validation writers x 8 genuine x 6 forgeries
    assert card["calibration"]["impostor_pairs"] == 3 * 8 * 6
    summary = json.loads(capsys.readouterr().out)
    assert summary["oneshot_way"] <= 3 and "skilled_eer" in summary

    report_path = tmp_path / "report.json"
    parser = evaluate_cmd.argparse.ArgumentParser()
    evaluate_cmd.add_arguments(parser)
    args = parser.parse_args(["--model", str(out), "--data", str(signature_tree), "--references", "5", "1", "8",
                              "--way", "5", "--episodes", "20", "--json", str(report_path),
                              "--plots", str(tmp_path / "plots")])
    assert evaluate_cmd.run(args) == 0
    captured = capsys.readouterr()
    report = json.loads(report_path.read_text())
    r = report["references"]
    assert r["count"] == 5 and r["classes"] == 10 and r["genuine_probes"] == 30 and r["skilled_forgeries"] == 60
    assert set(r["by_count"]) == {"5", "1", "8"} and r["by_count"]["8"]["classes"] == 0
    assert "skilled_eer" in r and "random_eer" in r and "far_skilled" in r
    for kind in ("skilled", "random"):
        low, high = r[f"{kind}_eer_ci95"]
        assert low <= r[f"{kind}_eer"] <= high
    assert "(95% over classes: " in captured.out
    assert report["data"]["forgeries"] == 60 and report["data"]["classes"] == 10
    assert (tmp_path / "plots" / "references-skilled" / "det.png").exists()
    # the whiter page under every forgery is found and reported, and the model's input no longer shows it
    assert "background_level" in report["shortcuts"]["stored"]["flagged"]
    assert "background level of the stored images alone separates" in captured.err
    assert "R=8: no class has more than 8 genuine images" in captured.out

    # cohort-normalized: the model's threshold is not applied, a given one is, and EER thresholds are printed
    cohort_path = tmp_path / "cohort.json"
    args = parser.parse_args(["--model", str(out), "--data", str(signature_tree), "--references", "5", "--cohort",
                              "--way", "5", "--episodes", "20", "--json", str(cohort_path)])
    assert evaluate_cmd.run(args) == 0
    r = json.loads(cohort_path.read_text())["references"]
    assert r["cohort"] is True and "threshold" not in r and "far_skilled" not in r
    out_text = capsys.readouterr().out
    assert "(nearest, cohort)" in out_text and "galleries create NAME --cohort-threshold T" in out_text
    args = parser.parse_args(["--model", str(out), "--data", str(signature_tree), "--references", "5", "--cohort",
                              "--threshold", "0.5", "--way", "5", "--episodes", "20", "--json", str(cohort_path)])
    assert evaluate_cmd.run(args) == 0
    report = json.loads(cohort_path.read_text())
    r = report["references"]
    assert r["threshold"] == 0.5 and r["threshold_source"] == "command line"
    assert report["pairs"]["threshold"] == read_card(out)["calibration"]["points"]["eer"]["distance"]  # pairs: the model's
    assert "at score <= 0.5000: FRR" in capsys.readouterr().out
    args = parser.parse_args(["--model", str(out), "--data", str(signature_tree), "--cohort"])
    assert evaluate_cmd.run(args) == 2 and "--cohort applies to --references" in capsys.readouterr().err


def test_rotation_classes_keep_forgeries_with_their_writer(signature_tree):
    from twinsearch.encoder.training import TrainConfig, Trainer

    pre = Preprocess(width=16, height=16, invert=True, background_removal="otsu")
    data = load_arrays(open_source(signature_tree, forgery_suffix="_forg"), pre)
    cfg = TrainConfig(backbone_args={"widths": [8, 16], "pool": "avg"}, dim=8, loss="prototypical", steps=2,
                      classes_per_batch=4, images_per_class=2, val_every=0, rotations=True)
    trainer = Trainer(cfg, pre, data, device="cpu")
    assert trainer.fit().steps == 2
    n = data.num_classes
    forges = trainer._forges
    assert len(forges) == 4 * n
    for c in np.flatnonzero(forges >= 0):  # same quarter turn, and the writer of the unrotated class
        assert forges[c] // n == c // n and forges[c] % n == data.forges[c % n]


def test_cohort_scores_divide_by_the_nearest_other_class():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(19, 5))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0] * 5 + [1] * 5 + [2] * 5 + [3] * 4)  # class 3 forges class 0
    forges = np.array([-1, -1, -1, 0])
    plain = reference_distances(emb, labels, forges, references=3, seed=2)
    cohort = reference_distances(emb, labels, forges, references=3, seed=2, cohort=True)
    # The references are drawn as the function draws them (one seeded generator, classes in order), the
    # same with and without the cohort; the scores are then computed directly.
    rng2 = np.random.default_rng(2)
    drawn = {c: rng2.choice(np.flatnonzero(labels == c), size=3, replace=False) for c in (0, 1, 2)}

    def nearest(x, c):
        return np.linalg.norm(emb[x][:, None] - emb[drawn[c]][None], axis=2).min(1)

    for c in (0, 1, 2):
        probes = np.setdiff1d(np.flatnonzero(labels == c), drawn[c])
        others = np.min([nearest(probes, o) for o in (0, 1, 2) if o != c], axis=0)
        expected = nearest(probes, c) / others ** COHORT_POWER
        assert np.allclose(cohort["genuine"][2 * c:2 * c + 2], expected)
        assert np.allclose(plain["genuine"][2 * c:2 * c + 2], nearest(probes, c))
    forged = np.flatnonzero(labels == 3)
    assert np.allclose(cohort["skilled"], nearest(forged, 0) / np.min([nearest(forged, 1), nearest(forged, 2)],
                                                                       axis=0) ** COHORT_POWER)
    assert np.allclose(cohort_normalized(np.array([0.5]), np.array([0.0])), 0.5 / 1e-6 ** COHORT_POWER)
    report, _ = reference_report(emb, labels, forges, 3, seed=2, cohort=True)
    assert report["cohort"] is True and report["classes"] == 3
    with pytest.raises(ValueError, match="two classes"):
        reference_distances(emb[:5], labels[:5], forges[:1], references=3, cohort=True)


def test_a_writer_split_decoded_in_parts_equals_the_split_of_everything(signature_tree):
    from twinsearch.encoder.data import decode_parts, item_indices

    src = open_source(signature_tree, forgery_suffix="_forg")
    pre = Preprocess(width=24, height=24, invert=True)
    expected = load_arrays(src, pre).split_genuine_classes(0.3, seed=0)
    for got, want in zip(decode_parts(src, pre, list(item_indices(src).split_genuine_classes(0.3, seed=0))),
                         expected, strict=True):
        assert np.array_equal(got.images, want.images) and np.array_equal(got.labels, want.labels)
        assert np.array_equal(got.forges, want.forges) and got.summary == want.summary
        assert (got.forges >= 0).any()  # each side holds its writers' forgeries


def equal_error_rate(genuine, impostor) -> float:
    return verification(genuine, impostor)["eer"]


def test_the_eer_interval_resamples_whole_classes():
    """The interval is that of drawing the classes with replacement and measuring each draw's EER, and it
    is as wide as the classes differ: none when every class gives the same distances."""
    rng = np.random.default_rng(0)
    genuine = [rng.normal(0.4 + s, 0.1, 7) for s in rng.normal(0, 0.1, 12)]
    impostor = [g.mean() + 0.2 + rng.normal(0, 0.1, 10) for g in genuine]
    g_class, i_class = (np.repeat(np.arange(12), [len(a) for a in parts]) for parts in (genuine, impostor))
    g, i = np.concatenate(genuine), np.concatenate(impostor)
    draws = np.random.default_rng(5).multinomial(12, np.full(12, 1 / 12), size=200)
    direct = [equal_error_rate(np.concatenate([genuine[c] for c in np.repeat(np.arange(12), w)]),
                               np.concatenate([impostor[c] for c in np.repeat(np.arange(12), w)])) for w in draws]
    assert eer_interval(g, i, g_class, i_class, resamples=200, seed=5) == pytest.approx(
        np.percentile(direct, [2.5, 97.5]).tolist())
    low, high = eer_interval(g, i, g_class, i_class)
    assert low < equal_error_rate(g, i) < high
    same_g, same_i = np.tile(genuine[0], 12), np.tile(impostor[0], 12)
    eer = equal_error_rate(genuine[0], impostor[0])
    assert eer_interval(same_g, same_i, np.repeat(np.arange(12), 7), np.repeat(np.arange(12), 10)) == \
        pytest.approx([eer, eer])
    assert eer_interval(g, i, np.zeros_like(g_class), np.zeros_like(i_class)) is None  # one class: no interval
