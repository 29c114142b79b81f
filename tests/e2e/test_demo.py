"""`twinsearch demo` end to end, as `make demo` runs it: a `twinsearch serve` subprocess, the client,
the summary, the montage and a clean stop."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _demo(tmp_path, *args, timeout=300):
    montage = tmp_path / "montage.png"
    result = subprocess.run(
        [sys.executable, "-m", "twinsearch.client.cli", "demo", "--montage", str(montage), "--json", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    summary = json.loads(out[out.index("\n{\n"):])
    return out, summary, montage


def test_demo_with_a_tiny_model(tmp_path, tiny_model):
    out, s, montage = _demo(tmp_path, "--model", str(tiny_model), "--probes-per-class", "1", "--pairs", "10",
                            "--alphabets", "Tagalog")
    assert "one-shot identification, top-1" in out and "stopped cleanly (exit 0)" in out
    assert s["server_exit"] == 0 and s["model"] == "tiny-test"
    assert s["gallery_classes"] + s["unknown_classes"] == 17 and s["enrolled"] == s["gallery_classes"]
    assert s["known_probes"] == s["gallery_classes"] and s["pairs"] == 20
    for key in ("one_shot_top1", "within_alphabet_top1", "verification_accuracy", "unknown_rejection"):
        assert 0.0 <= s[key] <= 1.0
    assert s["identify_p99_ms"] >= s["identify_p50_ms"] > 0
    with Image.open(montage) as image:
        assert image.format == "PNG" and image.width > 600


def _default_model_exists() -> bool:
    path = ROOT / "encoder" / "twinsearch" / "encoder" / "models" / "omniglot.tsm"
    return path.is_file()


@pytest.mark.skipif(not _default_model_exists(), reason="the default model is not shipped yet")
def test_demo_as_make_demo_runs_it(tmp_path):
    """The demo as `make demo` runs it (the shipped model, default settings), well inside 5 minutes,
    with accuracies far above chance (1/90 top-1, 1/20 within an alphabet, 1/2 for pairs)."""
    out, s, montage = _demo(tmp_path)
    assert s["server_exit"] == 0 and s["seconds"] < 300
    assert s["gallery_classes"] == 90 and s["unknown_classes"] == 16 and s["known_probes"] == 360
    assert s["one_shot_top1"] > 0.5 and s["within_alphabet_top1"] > 0.6
    assert s["verification_accuracy"] > 0.8
    assert montage.is_file()
