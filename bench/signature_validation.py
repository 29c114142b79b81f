"""Signature models compared on validation writers: reference-based EERs over many draws of the references.

    .venv/bin/python bench/signature_validation.py MODEL.tsm [MODEL.tsm ...] [--references 5] [--draws 10]

The validation writers are the ones `twinsearch train` held out of writers 001-048 (`--val-fraction` and
`--seed` as the model was trained, 0.2 and 0 by default), so recipes can be chosen here without looking at
writers 049-069, which stay for the report. With a few writers one draw of the references moves the EER
by a couple of points; this prints the mean and the standard deviation over `--draws` draws.

Class scorings: the gallery's own (`nearest`, `prototype`, `mean_of_k`), and two that divide by the
writer's spread, to see whether a writer-dependent scale would help: `nearest/loo` (nearest reference
over the references' mean leave-one-out nearest distance) and `mean/spread` (mean distance over the
references' mean pairwise distance). The server does not offer the last two.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_recipes import REPO, SIGNATURES, prepare_signatures  # noqa: E402

from twinsearch.encoder.data.loading import load_arrays  # noqa: E402
from twinsearch.encoder.data.sources import open_source  # noqa: E402
from twinsearch.encoder.evaluation.metrics import verification  # noqa: E402
from twinsearch.encoder.evaluation.references import class_distance  # noqa: E402
from twinsearch.encoder.model import load_model  # noqa: E402

SCORINGS = ("nearest", "prototype", "mean_of_k", "nearest/loo", "mean/spread")


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0, None))


def scored(probes: np.ndarray, refs: np.ndarray, scoring: str) -> np.ndarray:
    """(P,) class distances of `probes` to one writer's `refs` under `scoring` (smaller = more alike)."""
    if scoring in ("nearest", "prototype", "mean_of_k"):
        return class_distance(probes, refs, scoring)
    d, within = _pairwise(probes, refs), _pairwise(refs, refs)
    n = len(refs)
    if n < 2:
        return d.min(1) if scoring == "nearest/loo" else d.mean(1)
    if scoring == "nearest/loo":
        return d.min(1) / (within + np.eye(n) * 9.0).min(1).mean()
    return d.mean(1) / within[np.triu_indices(n, 1)].mean()


def compare(emb: np.ndarray, labels: np.ndarray, forges: np.ndarray, references: int, draws: int) -> dict:
    """{scoring: (skilled EERs, random EERs)} over `draws` draws of `references` references per writer."""
    forged = forges[labels] >= 0
    out = {s: ([], []) for s in SCORINGS}
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        parts = {s: ([], [], []) for s in SCORINGS}
        for c in np.flatnonzero(forges < 0):
            members = np.flatnonzero((labels == c) & ~forged)
            if len(members) <= references:
                continue
            refs = rng.choice(members, references, replace=False)
            groups = (np.setdiff1d(members, refs), np.flatnonzero(forged & (forges[labels] == c)),
                      np.flatnonzero(~forged & (labels != c)))
            for s in SCORINGS:
                for part, idx in zip(parts[s], groups, strict=True):
                    part.append(scored(emb[idx], emb[refs], s))
        for s in SCORINGS:
            genuine, skilled, random = (np.concatenate(p) for p in parts[s])
            out[s][0].append(verification(genuine, skilled)["eer"])
            out[s][1].append(verification(genuine, random)["eer"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--references", type=int, default=5)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0, help="the training seed, which drew the split")
    args = parser.parse_args()
    prepare_signatures()
    source = open_source(REPO / SIGNATURES / "train", forgery_suffix="_forg")
    print(f"{'model':<28} {'scoring':<12} {'skilled EER':>16} {'random EER':>16}")
    for path in args.models:
        model = load_model(path)
        _, val = load_arrays(source, model.preprocess).split_genuine_classes(args.val_fraction, args.seed)
        emb = model.embed_arrays(val.images).astype(np.float64)
        for s, (skilled, random) in compare(emb, val.labels, val.forges, args.references, args.draws).items():
            print(f"{Path(path).name:<28} {s:<12} {np.mean(skilled):>8.4f} +- {np.std(skilled):.4f} "
                  f"{np.mean(random):>8.4f} +- {np.std(random):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
