"""The isotonic distance-to-probability mapping: PAV against brute force, storage, the train flag."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from twinsearch.encoder import calibration as calibration_module
from twinsearch.encoder.calibration import Calibration
from twinsearch.encoder.card import read_card
from twinsearch.encoder.commands import train as train_cmd
from twinsearch.encoder.model import load_model


def _distances(rng, n_genuine=400, n_impostor=3000, gap=0.5):
    genuine = np.clip(rng.normal(0.8, 0.15, n_genuine), 0, 2)
    impostor = np.clip(rng.normal(0.8 + gap, 0.15, n_impostor), 0, 2)
    return genuine, impostor


def _brute_force(genuine, impostor):
    """P(same) at each distinct distance by the min-max formula of the non-increasing weighted fit."""
    x = np.unique(np.concatenate([genuine, impostor]))
    w = np.array([np.sum(genuine == v) / genuine.size + np.sum(impostor == v) / impostor.size for v in x])
    wy = np.array([np.sum(genuine == v) / genuine.size for v in x])
    fit = [min(max(wy[s:t + 1].sum() / w[s:t + 1].sum() for t in range(i, len(x))) for s in range(i + 1))
           for i in range(len(x))]
    return x, np.clip(fit, 1e-6, 1 - 1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_pav_matches_brute_force(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    # few, rounded distances: classes overlap and tie with each other
    genuine = np.round(rng.uniform(0.2, 1.2, rng.integers(2, 15)), 1)
    impostor = np.round(rng.uniform(0.6, 1.6, rng.integers(2, 25)), 1)
    x, expected = _brute_force(genuine, impostor)
    monkeypatch.setattr(calibration_module, "_KNOT_LOGIT_STEP", 0.0)  # keep every knot
    cal = Calibration.fit(genuine, impostor, probability="isotonic")
    assert np.allclose(cal.probability(x), expected, rtol=0, atol=1e-12)


def test_monotone_compact_and_close_to_the_full_curve(monkeypatch):
    rng = np.random.default_rng(7)
    genuine, impostor = _distances(rng, 2000, 50_000, gap=0.3)
    cal = Calibration.fit(genuine, impostor, probability="isotonic")
    assert cal.mapping == "isotonic" and cal.slope > 0  # the logistic mapping is fitted too
    assert 2 <= len(cal.isotonic_curve) <= 224
    d = np.linspace(-0.5, 2.5, 2001)
    p = cal.probability(d)
    assert np.all(np.diff(p) <= 0) and p.min() >= 1e-6 and p.max() <= 1 - 1e-6
    monkeypatch.setattr(calibration_module, "_KNOT_LOGIT_STEP", 0.0)
    full = Calibration.fit(genuine, impostor, probability="isotonic")
    assert len(full.isotonic_curve) > len(cal.isotonic_curve)

    def logit(q):
        return np.log(q) - np.log1p(-q)

    assert np.max(np.abs(logit(p) - logit(full.probability(d)))) <= 0.25 + 1e-9


def test_well_separated_distances_give_near_certain_probabilities():
    rng = np.random.default_rng(3)
    genuine, impostor = rng.uniform(0.1, 0.5, 300), rng.uniform(1.0, 1.6, 5000)
    cal = Calibration.fit(genuine, impostor, probability="isotonic")
    p = cal.probability(np.array([0.0, 0.3, genuine.max(), impostor.min(), 1.3, 2.0]))
    assert np.all(p[:3] == 1 - 1e-6) and np.all(p[3:] == 1e-6)
    # linear across the gap between the classes
    assert cal.probability((genuine.max() + impostor.min()) / 2) == pytest.approx(0.5)
    assert cal.probability(np.zeros((2, 3))).shape == (2, 3)


def test_logistic_stays_the_default():
    rng = np.random.default_rng(4)
    genuine, impostor = _distances(rng)
    cal = Calibration.fit(genuine, impostor)
    assert cal.mapping == "logistic" and cal.isotonic_curve == []
    z = cal.slope * 0.9 + cal.intercept
    assert cal.probability(0.9) == pytest.approx(1 / (1 + np.exp(z)))
    with pytest.raises(ValueError, match="probability mapping"):
        Calibration.fit(genuine, impostor, probability="platt")


def test_json_round_trip():
    rng = np.random.default_rng(5)
    cal = Calibration.fit(*_distances(rng), probability="isotonic")
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    d = np.linspace(0, 2, 101)
    assert np.array_equal(back.probability(d), cal.probability(d))


def test_card_written_before_isotonic_loads_as_logistic():
    rng = np.random.default_rng(6)
    cal = Calibration.fit(*_distances(rng))
    old = cal.to_dict()
    del old["mapping"], old["isotonic_curve"]
    back = Calibration.from_dict(old)
    assert back.mapping == "logistic" and back.isotonic_curve == [] and back == cal


@pytest.mark.parametrize(("change", "message"), [
    ({"isotonic_curve": [[0.2, 0.9], [0.1, 0.5]]}, "distances must increase: knot 1"),
    ({"isotonic_curve": [[0.1, 0.9], [0.1, 0.5]]}, "distances must increase"),
    ({"isotonic_curve": [[0.1, 1.5], [0.2, 0.5]]}, r"probabilities must be in \[0, 1\]"),
    ({"isotonic_curve": [[0.1, 0.9], [0.2, -0.1]]}, r"probabilities must be in \[0, 1\]"),
    ({"isotonic_curve": [[0.1, 0.5], [0.2, 0.9]]}, "must not increase with distance"),
    ({"isotonic_curve": [[0.1, 0.9], [0.2]]}, "knot 1 is not a"),
    ({"isotonic_curve": [[0.1, 0.9, 0.3]]}, "knot 0 is not a"),
    ({"isotonic_curve": {"0.1": 0.9}}, "list of"),
    ({"isotonic_curve": []}, "no knots"),
    ({"mapping": "platt"}, "mapping must be one of"),
])
def test_malformed_isotonic_data_is_rejected(change, message):
    rng = np.random.default_rng(8)
    data = {**Calibration.fit(*_distances(rng), probability="isotonic").to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict(data)


def test_large_input_is_fast_enough():
    rng = np.random.default_rng(9)
    genuine, impostor = _distances(rng, 20_000, 1_000_000, gap=0.4)
    knots = calibration_module._fit_isotonic(genuine, impostor)
    p = np.array([k[1] for k in knots])
    assert len(knots) <= 224 and np.all(np.diff(p) <= 0)


def test_train_flag_reaches_the_card(glyph_tree, tmp_path, capsys):
    out = tmp_path / "iso.tsm"
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["--data", str(glyph_tree), "--class-depth", "2", "--size", "16", "--invert",
                              "--widths", "8", "16", "--pool", "avg", "--dim", "8", "-P", "4", "-K", "2",
                              "--steps", "2", "--val-every", "0", "--val-fraction", "0.34",
                              "--eval-episodes", "5", "--eval-way", "3", "--threads", "2", "--out", str(out),
                              "--no-progress", "--probability", "isotonic"])
    assert train_cmd.run(args) == 0
    capsys.readouterr()
    card = read_card(out)
    assert card["calibration"]["mapping"] == "isotonic" and len(card["calibration"]["isotonic_curve"]) >= 1
    model = load_model(out, device="cpu")
    assert model.calibration.mapping == "isotonic"
    p = model.calibration.probability(np.linspace(0, 2, 21))
    assert np.all(np.diff(p) <= 0) and np.all((p >= 1e-6) & (p <= 1 - 1e-6))
