"""Signature recipes compared over several splits of the training writers, at fixed steps.

    .venv/bin/python bench/signature_splits.py NAME [--seeds 1 2 3] [--steps 300] -- [twinsearch train flags]
    .venv/bin/python bench/signature_splits.py preset                       # the preset as it is
    .venv/bin/python bench/signature_splits.py init -- --init omni96.tsm    # one change
    .venv/bin/python bench/signature_splits.py --summary NAME [NAME ...]    # the table of finished runs
    .venv/bin/python bench/signature_splits.py preset-t10 --seed-offset 10  # other training seeds, same splits

Each seed trains `--preset signatures` on writers 001-048 with a quarter of them held out for validation
(`--val-fraction 0.25 --seed S`: another 11 writers per seed), for a fixed number of steps, validating every
50. The figure is the validation skilled-forgery EER (5 references, nearest, mean of 5 draws, as `train`
records it in the card's history) read at every validation step and averaged over the seeds: no step is
picked by its luck, which on 9 to 11 writers moves the EER by several points from one validation to the
next. Writers 049-069 are not touched. Models go to runs/splits/NAME-SEED.tsm. `--seed-offset T` trains
with the seed SEED + T on split SEED (`--split-seed`), for several models of one recipe on the same
splits (`bench/signature_validation.py --ensemble` scores them together).
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_recipes import REPO, SIGNATURES, prepare_signatures  # noqa: E402

from twinsearch.encoder.card import read_card  # noqa: E402

OUT = REPO / "runs" / "splits"


def train(name: str, seed: int, steps: int, extra: list[str], seed_offset: int = 0) -> Path:
    out = OUT / f"{name}-{seed}.tsm"
    cmd = [str(Path(sys.executable).with_name("twinsearch")), "train", "--preset", "signatures", "--data", f"{SIGNATURES}/train",
           "--threads", "2", "--name", name, "--steps", str(steps), "--val-every", "50", "--val-fraction", "0.25",
           "--seed", str(seed + seed_offset), "--split-seed", str(seed), "--no-progress", "--no-graph", "--out", str(out), *extra]
    print("$ " + shlex.join(["twinsearch", *cmd[1:]]), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return out


def summary(name: str) -> str:
    """One table row: mean skilled EER per step over the seeds, overall and per seed; mean random EER."""
    runs = {}
    for path in sorted(OUT.glob(f"{name}-*.tsm")):
        if not re.fullmatch(rf"{re.escape(name)}-\d+", path.stem):  # "init-2", not "init-lr3e-4-2"
            continue
        history = read_card(path)["training"]["history"]
        runs[path.stem.rsplit("-", 1)[1]] = {h["step"]: (h["val_skilled_eer"], h["val_random_eer"]) for h in history}
    if not runs:
        return f"| {name} | no runs in {OUT} |"
    steps = sorted(set.intersection(*(set(r) for r in runs.values())))
    skilled = np.array([[r[s][0] for s in steps] for r in runs.values()]) * 100
    random = np.array([[r[s][1] for s in steps] for r in runs.values()]) * 100
    per_step = " / ".join(f"{x:.1f}" for x in skilled.mean(0))
    per_seed = " / ".join(f"{x:.1f}" for x in skilled.mean(1))
    return (f"| {name} (seeds {', '.join(runs)}; steps {', '.join(map(str, steps))}) | {per_step}% | "
            f"{skilled.mean():.1f}%; {per_seed}% | {random.mean():.1f}% |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="*", help="a name for the runs (with --summary: the runs to tabulate)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="train with seed S + OFFSET on the split of seed S (default 0: the split's seed)")
    parser.add_argument("--summary", action="store_true", help="only print the table of finished runs")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if not args.name:
        parser.error("give a name for the runs")
    if not args.summary:
        if len(args.name) != 1:
            parser.error("train one recipe at a time (one name)")
        prepare_signatures()
        OUT.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            train(args.name[0], seed, args.steps, extra, args.seed_offset)
    print("| recipe | skilled-forgery EER per validation step | mean; per seed | random-forgery EER, mean |")
    print("| --- | --- | --- | --- |")
    for name in args.name:
        print(summary(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
