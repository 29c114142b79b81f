"""The encoder's training recipes, run end to end: `twinsearch train`, then `twinsearch evaluate`.

    .venv/bin/python bench/encoder_recipes.py omniglot        # the default model's recipe, 20 min on 2 cores
    .venv/bin/python bench/encoder_recipes.py fashion-mnist   # needs `apt-get install dataset-fashion-mnist`
    .venv/bin/python bench/encoder_recipes.py signatures      # needs ../shared/data/signatures/sigcomp2011.zip
    .venv/bin/python bench/encoder_recipes.py signatures --data-only   # lay out runs/sigcomp2011-writers only

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
- signatures (the shipped `signatures` model): trained on writers 001-048 (1,048 steps, kept step 600 by
  the skilled-forgery EER of 9 validation writers), the embedding with the histogram of stroke directions
  (`--orientation-weight 0.65`), evaluated on writers 049-069 with 5 genuine references each:
  skilled-forgery EER 19.0%, random-forgery EER 1.87% (1 / 3 / 10 references: 25.9 / 19.0 / 17.0% and
  4.76 / 2.12 / 0.33%). Report bench/results/encoder_signatures.json. The preset binarises: in this set the
  forgeries' ink is darker than the genuine signatures' (AUC 1.00 from the darkest ink alone), and a model
  that keeps the ink's grey levels reaches a skilled-forgery EER near 5% on the same writers by that alone.
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
SIGNATURES_ZIP = REPO.parent / "shared" / "data" / "signatures" / "sigcomp2011.zip"
SIGNATURES = "runs/sigcomp2011-writers"  # made by `prepare_signatures` (not part of the repository)

# Each recipe is a preset of `twinsearch train` plus the data it was measured on; flags here override the
# preset only where the data needs it (layout, normalisation, the closed-set posterior).
RECIPES = {
    "omniglot": {
        "preset": "characters",
        "train": ["--data", f"{OMNIGLOT}/images_background_small1.zip", "--class-depth", "2",
                  "--calib-data", f"{OMNIGLOT}/images_background_small2.zip", "--calib-groups", *HELD_OUT,
                  "--threads", "2", "--name", "omniglot"],
        "evaluate": ["--data", f"{OMNIGLOT}/images_background_small2.zip", "--class-depth", "2",
                     "--groups", *HELD_OUT, "--way", "20", "--shot", "1", "--within-group", "--episodes", "400"],
    },
    "fashion-mnist": {
        "preset": "clothing",
        "train": ["--data", FASHION, "--split", "train", "--val-by", "images", "--val-fraction", "0.05",
                  "--posterior-weight", "0.75", "--threads", "2", "--name", "fashion-mnist"],
        "evaluate": ["--data", FASHION, "--split", "test", "--way", "10", "--shot", "1", "--episodes", "400"],
    },
    "signatures": {
        "preset": "signatures",
        "train": ["--data", f"{SIGNATURES}/train", "--threads", "2", "--name", "signatures"],
        "evaluate": ["--data", f"{SIGNATURES}/eval", "--references", "5", "1", "3", "10", "--way", "10",
                     "--episodes", "400"],
    },
}


def prepare_signatures(zip_path: Path = SIGNATURES_ZIP, out: Path = REPO / SIGNATURES) -> Path:
    """The writer-independent split of the ICDAR 2011 Dutch signatures: writers 001-048 in out/train, 049-069
    in out/eval, each as NNN/ (genuine, from both of the set's folders) and NNN_forg/ (skilled forgeries).
    The set stays outside the repository (its licence); this copies it into the ignored runs/ folder."""
    import zipfile

    if (out / "train").is_dir() and (out / "eval").is_dir():
        return out
    if not zip_path.exists():
        raise SystemExit(f"signature data not found at {zip_path}")
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(zip_path) as zf:
        for name in zf.namelist():
            parts = Path(name).parts
            if name.endswith("/") or len(parts) < 5 or not name.lower().endswith(".png"):
                continue
            writer_folder = parts[-2]  # NNN or NNN_forg
            side = "train" if int(writer_folder[:3]) <= 48 else "eval"
            target = tmp / side / writer_folder / f"{parts[1]}_{parts[-1]}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    tmp.rename(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--results", default=str(REPO / "bench" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-only", action="store_true",
                        help="only lay out the recipe's data (signatures: writers 001-048 and 049-069 as NNN/ and "
                             "NNN_forg/ under runs/sigcomp2011-writers/train and eval) and stop")
    args = parser.parse_args()
    recipe = RECIPES[args.recipe]
    if args.recipe == "signatures":
        print(f"signature data: {prepare_signatures()}", flush=True)
    if args.data_only:
        return 0
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"encoder_{args.recipe}"
    twinsearch = str(Path(sys.executable).with_name("twinsearch"))
    train = [twinsearch, "train", "--preset", recipe["preset"], *recipe["train"], "--minutes", f"{args.minutes:g}",
             "--seed", str(args.seed), "--out", f"{stem}.tsm"]
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
