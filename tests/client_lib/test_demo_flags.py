"""`twinsearch demo` refuses flag values and --data it cannot use in one line (exit 2) before it starts a
server, and reports a figure it had nothing to measure as n/a, not nan."""

from __future__ import annotations

import argparse
import json
import zipfile

import pytest

from twinsearch.client.cli import main
from twinsearch.client.commands import demo
from twinsearch.client.demo.plan import Sample, make_plan
from twinsearch.client.demo.run import run_demo


def _refused(argv, capsys) -> str:
    status = main(["demo", *argv])
    captured = capsys.readouterr()
    assert status == 2, captured.err
    assert "Traceback" not in captured.err and captured.out == ""  # refused before anything started
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twinsearch demo: ")
    return lines[0]


@pytest.fixture
def small_zip(tmp_path, png):
    """An Omniglot-style zip: root/Alpha/characterNN/<id>_<drawer>.png, 3 characters of 4 drawers."""
    path = tmp_path / "small.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for c in range(1, 4):
            for d in range(1, 5):
                zf.writestr(f"root/Alpha/character{c:02d}/{c:02d}{d:02d}_{d:02d}.png", png(10 * c + d))
    return path


@pytest.mark.parametrize("flags, words", [
    (["--probes-per-class", "0"], "--probes-per-class must be at least 1, got 0"),
    (["--unknown-fraction", "1"], "(1 leaves the gallery empty), got 1"),
    (["--unknown-fraction", "-0.1"], "0 or more and below 1"),
    (["--pairs", "-1"], "--pairs must be 0 (no verification) or more, got -1"),
])
def test_meaningless_values_are_refused(flags, words, capsys):
    assert words in _refused(flags, capsys)


def test_data_must_be_the_zip(tmp_path, capsys):
    line = _refused(["--data", str(tmp_path)], capsys)
    assert "--data takes the Omniglot zip file" in line and f"{tmp_path} is a folder" in line
    (tmp_path / "images.zip").write_text("not a zip")
    assert "is not a zip file" in _refused(["--data", str(tmp_path / "images.zip")], capsys)
    assert "does not exist" in _refused(["--data", str(tmp_path / "missing.zip")], capsys)


def test_a_fraction_that_leaves_too_few_characters_to_enroll(small_zip, capsys):
    line = _refused(["--data", str(small_zip), "--alphabets", "Alpha", "--unknown-fraction", "0.7"], capsys)
    assert "keeps 2 of the 3 characters out of the gallery, leaving 1 to enroll" in line


def test_help_says_how_long_it_takes():
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert "minute or two" not in parser.description and "under half a minute" in parser.description


def test_nothing_to_measure_reads_n_a(local_client, png, capsys):
    characters = {f"Alpha/character{c:02d}": [Sample(f"Alpha/character{c:02d}/{d}.png", f"Alpha/character{c:02d}",
                                                     d, png(10 * c + d)) for d in range(1, 4)]
                  for c in range(1, 5)}
    plan = make_plan(characters, probes_per_class=1, unknown_fraction=0.0, pairs=0, seed=0)
    summary, _ = run_demo(local_client, plan, lambda text: None)
    assert summary["unknown_rejection"] is None and summary["verification_accuracy"] is None
    assert summary["verify_p50_ms"] is None and all(r["unknown_rejected"] is None for r in summary["open_set"])
    json.dumps(summary, allow_nan=False)  # null, not NaN, in --json's output
    demo.print_summary(summary, local_client.info(), 1.0, 0, demo.Path("montage.png"))
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    assert "n/a  (no character kept out of the gallery)" in out and "n/a  (no pairs)" in out
    assert "one-shot identification, top-1" in out and "%" in out
