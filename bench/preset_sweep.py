"""Every preset on every data set on hand: does any collapse or fall to chance where it was not tuned?

    .venv/bin/python bench/preset_sweep.py --minutes 5 --seeds 0 1 [--presets ...] [--datasets ...]
                                           [--jobs 2 --threads 1] [--train-args "--init M.tsm"]

For each preset, data set and seed: `twinsearch train --preset P` on the data set's training part, then
`twinsearch evaluate` on its held-out part (Omniglot: three alphabets never trained on, within-alphabet
20-way; signatures: writers 049-069 with 5 references; Fashion-MNIST: the test split, 10-way). One JSON
line per run goes to bench/results/preset_sweep.jsonl, and a table to the terminal. Models are written to
a temporary folder and removed. `--jobs 2 --threads 1` runs two trainings at once on one thread each: on
2 cores about the same work per run as one run on two threads, in half the wall time (each row records
its threads).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_recipes import FASHION, HELD_OUT, OMNIGLOT, REPO, SIGNATURES, prepare_signatures  # noqa: E402

from twinsearch.encoder.presets import PRESETS  # noqa: E402

DATASETS = {
    "omniglot": {
        "train": ["--data", f"{OMNIGLOT}/images_background_small1.zip", "--class-depth", "2"],
        "evaluate": ["--data", f"{OMNIGLOT}/images_background_small2.zip", "--class-depth", "2",
                     "--groups", *HELD_OUT, "--way", "20", "--within-group", "--episodes", "200"],
        "chance": 1 / 20,
    },
    "signatures": {
        "train": ["--data", f"{SIGNATURES}/train"],
        "evaluate": ["--data", f"{SIGNATURES}/eval", "--references", "5", "--way", "10", "--episodes", "200"],
        "chance": 1 / 10,
    },
    "fashion-mnist": {
        "train": ["--data", FASHION, "--split", "train"],
        "evaluate": ["--data", FASHION, "--split", "test", "--way", "10", "--episodes", "200"],
        "chance": 1 / 10,
    },
}


def run_one(preset: str, dataset: str, seed: int, minutes: float, folder: Path, threads: int = 2,
            extra: tuple[str, ...] = ()) -> dict:
    twinsearch = str(Path(sys.executable).with_name("twinsearch"))
    d = DATASETS[dataset]
    model, report = folder / f"{preset}-{dataset}-{seed}.tsm", folder / f"{preset}-{dataset}-{seed}.json"
    t0 = time.monotonic()
    train = subprocess.run([twinsearch, "train", "--preset", preset, *d["train"], "--minutes", f"{minutes:g}",
                            "--seed", str(seed), "--threads", str(threads), "--no-progress",
                            "--out", str(model), *extra],
                           cwd=REPO, capture_output=True, text=True)
    row: dict = {"preset": preset, "dataset": dataset, "seed": seed, "minutes": minutes, "threads": threads}
    if extra:
        row["train_args"] = shlex.join(extra)
    if train.returncode < 0:  # a signal: on Linux most often the kernel's out-of-memory killer (SIGKILL)
        return {**row, "error": f"training killed by signal {-train.returncode}"}
    if train.returncode:
        return {**row, "error": (train.stderr.strip().splitlines() or ["?"])[-1]}
    summary = json.loads(train.stdout)
    ev = subprocess.run([twinsearch, "evaluate", "--model", str(model), *d["evaluate"], "--json", str(report)],
                        cwd=REPO, capture_output=True, text=True)
    if ev.returncode:
        return {**row, "error": (ev.stderr.strip().splitlines() or ["?"])[-1]}
    rep = json.loads(report.read_text())
    card_eval = json.loads(subprocess.run(
        [sys.executable, "-c", "import json,sys; from twinsearch.encoder.card import read_card; "
                               "print(json.dumps(read_card(sys.argv[1])))", str(model)],
        capture_output=True, text=True, check=True).stdout)
    row.update(steps=summary["steps"], train_s=round(time.monotonic() - t0, 1),
               warnings=card_eval["training"].get("warnings", []),
               precision=card_eval["training"].get("precision"),
               distance_spread=card_eval["evaluation"].get("distance_spread"),
               oneshot=rep["oneshot"]["accuracy"], way=rep["oneshot"]["mean_way"], chance=d["chance"],
               pairs_eer=rep["pairs"]["eer"], recall_at_1=rep["recall_at_1"])
    if "references" in rep:
        row.update(skilled_eer=rep["references"]["skilled_eer"], random_eer=rep["references"]["random_eer"])
    if rep.get("shortcuts"):  # statistics of the model's input that alone tell forgeries apart
        row["input_shortcuts"] = rep["shortcuts"].get("model_input", {}).get("flagged", [])
    row["collapsed"] = bool(row["distance_spread"] is not None and row["distance_spread"] < 0.01)
    row["at_chance"] = row["oneshot"] <= 1.5 * row["chance"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "preset_sweep.jsonl"))
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once")
    parser.add_argument("--threads", type=int, default=2, help="threads of each training")
    parser.add_argument("--train-args", default="", metavar="FLAGS",
                        help="more `twinsearch train` flags for every run, one quoted string "
                             "(e.g. \"--init M.tsm\"); recorded in each row as train_args")
    args = parser.parse_args()
    extra = tuple(shlex.split(args.train_args))
    if "signatures" in args.datasets:
        prepare_signatures()
    print(f"{'preset':<11} {'data':<14} {'seed':>4} {'steps':>6} {'spread':>7} {'one-shot':>9} {'pair EER':>8} "
          f"{'skilled EER':>11}  note", flush=True)
    runs = [(p, d, seed) for d in args.datasets for p in args.presets for seed in args.seeds]
    with tempfile.TemporaryDirectory() as tmp, open(args.out, "a") as log, \
            concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, p, d, seed, args.minutes, Path(tmp), args.threads, extra)
                   for p, d, seed in runs]
        for future in futures:
            row = future.result()
            preset, dataset, seed = row["preset"], row["dataset"], row["seed"]
            log.write(json.dumps(row) + "\n")
            log.flush()
            if "error" in row:
                print(f"{preset:<11} {dataset:<14} {seed:>4}  error: {row['error']}", flush=True)
                continue
            note = "COLLAPSED" if row["collapsed"] else ("AT CHANCE" if row["at_chance"] else "")
            if row.get("input_shortcuts"):
                note += " input shortcut: " + ", ".join(row["input_shortcuts"])
            skilled = "" if row.get("skilled_eer") is None else f"{row['skilled_eer']:.3f}"
            print(f"{preset:<11} {dataset:<14} {seed:>4} {row['steps']:>6} {row['distance_spread']:>7.3f} "
                  f"{row['oneshot']:>9.3f} {row['pairs_eer']:>8.3f} {skilled:>11}  {note}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
