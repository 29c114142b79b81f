"""The encoder's training recipes, run end to end: `twinsearch train`, then `twinsearch evaluate`.

    .venv/bin/python bench/encoder_recipes.py omniglot        # the default model's recipe, 20 min on 2 cores
    .venv/bin/python bench/encoder_recipes.py fashion-mnist   # needs `apt-get install dataset-fashion-mnist`

Each recipe writes its model to bench/results/encoder_<recipe>.tsm, the evaluation report to
bench/results/encoder_<recipe>.json and plots to bench/results/encoder_<recipe>_plots/. The commands
are printed before they run, so they can be copied. `--minutes` shortens the budget for a quick look.

Measured (2 CPU threads on the 2-core machine, 20 minutes each):
- omniglot: 0.858 within-alphabet 20-way 1-shot (400 episodes); report bench/results/encoder_omniglot.json.
- fashion-mnist: on the test split, classic-pair accuracy 0.961 at the card's EER threshold and Recall@1
  0.929 (targets 0.96 and 0.92); 6,578 steps, 1,200.8 s for the whole fit. Report
  bench/results/encoder_fashion-mnist.json. Test views: 1-pixel shifts and mirrors (10 per image). The
  embedding carries the class posterior over the 10 training classes (`--posterior-weight 0.75`, chosen
  on the validation images): the same model with the posterior removed gives 0.949 / 0.932. Genuine pairs are
  still rejected most in Shirt (0.12), T-shirt (0.09) and Pullover (0.08).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT = "data/omniglot"
HELD_OUT = ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
FASHION = "/usr/share/datasets/fashion-mnist"

RECIPES = {
    "omniglot": {
        "train": ["--data", f"{OMNIGLOT}/images_background_small1.zip", "--class-depth", "2",
                  "--calib-data", f"{OMNIGLOT}/images_background_small2.zip", "--calib-groups", *HELD_OUT,
                  "--invert", "--size", "32", "--rotations", "--loss", "prototypical", "-P", "60", "-K", "2",
                  "--groups-per-batch", "2", "--aug-elastic", "0.03", "--tta", "2", "--threads", "2",
                  "--val-every", "200", "--name", "omniglot"],
        "evaluate": ["--data", f"{OMNIGLOT}/images_background_small2.zip", "--class-depth", "2",
                     "--groups", *HELD_OUT, "--way", "20", "--shot", "1", "--within-group", "--episodes", "400"],
    },
    "fashion-mnist": {
        "train": ["--data", FASHION, "--split", "train", "--val-by", "images", "--val-fraction", "0.05",
                  "--size", "28", "--mean", "0.286", "--std", "0.353", "--widths", "32", "64", "128",
                  "--convs-per-block", "2", "--precision", "bf16", "--tta", "1", "--tta-flip",
                  "--posterior-weight", "0.75", "--loss", "normsoftmax",
                  "--margin", "0.25", "--scale", "30", "-P", "10", "-K", "25", "--aug-rotation", "0",
                  "--aug-shear", "0", "--aug-scale", "0.95", "1.05", "--aug-translate", "0.06", "--aug-hflip", "0.5",
                  "--threads", "2", "--val-every", "1000", "--name", "fashion-mnist"],
        "evaluate": ["--data", FASHION, "--split", "test", "--way", "10", "--shot", "1", "--episodes", "400"],
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--results", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    recipe = RECIPES[args.recipe]
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"encoder_{args.recipe}"
    twinsearch = str(Path(sys.executable).with_name("twinsearch"))
    train = [twinsearch, "train", *recipe["train"], "--minutes", f"{args.minutes:g}", "--out", f"{stem}.tsm"]
    evaluate = [twinsearch, "evaluate", "--model", f"{stem}.tsm", *recipe["evaluate"], "--json", f"{stem}.json",
                "--plots", f"{stem}_plots"]
    for cmd in (train, evaluate):
        print("$ " + shlex.join(["twinsearch", *cmd[1:]]), flush=True)
        done = subprocess.run(cmd, cwd=REPO)
        if done.returncode:
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
