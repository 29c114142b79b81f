"""Signature models compared on validation writers: reference-based EERs over many draws of the references.

    .venv/bin/python bench/signature_validation.py MODEL.tsm [MODEL.tsm ...] [--references 5] [--draws 10]

The validation writers are the ones `twinsearch train` held out of writers 001-048 (`--val-fraction` and
`--seed` as the model was trained, 0.2 and 0 by default), so recipes can be chosen here without looking at
writers 049-069, which stay for the report. With a few writers one draw of the references moves the EER
by a couple of points; this prints the mean and the standard deviation over `--draws` draws, and the mean
equal-error thresholds.

Class scorings: the gallery's own (`nearest`, `prototype`, `mean_of_k`), and two that divide by the
writer's spread, to see whether a writer-dependent scale would help: `nearest/loo` (nearest reference
over the references' mean leave-one-out nearest distance) and `mean/spread` (mean distance over the
references' mean pairwise distance). The server does not offer the last two. `--cohort-powers P ...` adds
`nearest/cohort^P` rows: the nearest-reference distance over the P-th power of the distance to the nearest
other validation writer's references (the server's `verify_class(cohort=True)` uses P = 1/4, chosen here).

`--ensemble` scores the given models as one: each image's embeddings by every model, concatenated and
divided by the square root of their number (a squared distance is then the mean of the models' squared
distances). Each model embeds the images at its own input size; the validation writers must be the same.
`--tta PIXELS` embeds every image with four shifted views as well (up, down, left, right by PIXELS, the
`--tta` of `twinsearch train`) and averages them.

`--orientation-weights W ...` scores each model again with the histogram of gradient directions of
`twinsearch train --orientation-weight W` appended to its embeddings (share W of the squared distance;
`--orientation-cells` and `--orientation-bins` as in train), for models trained without it.
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
from twinsearch.encoder.evaluation.references import class_distance, reference_distances  # noqa: E402
from twinsearch.encoder.heads import OrientationHistogram, shift_views  # noqa: E402
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


def compare(emb: np.ndarray, labels: np.ndarray, forges: np.ndarray, references: int, draws: int,
            cohort_powers: tuple[float, ...] = ()) -> dict:
    """{scoring: (skilled EERs, random EERs, skilled EER thresholds, random EER thresholds)} over `draws` draws
    of `references` references per writer."""
    forged = forges[labels] >= 0
    names = SCORINGS + tuple(f"nearest/cohort^{p:g}" for p in cohort_powers)
    out = {s: ([], [], [], []) for s in names}
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        parts = {s: ([], [], []) for s in names}
        refs = {}
        for c in np.flatnonzero(forges < 0):
            members = np.flatnonzero((labels == c) & ~forged)
            if len(members) > references:
                refs[c] = rng.choice(members, references, replace=False)
        for c, own in refs.items():
            members = np.flatnonzero((labels == c) & ~forged)
            groups = (np.setdiff1d(members, own), np.flatnonzero(forged & (forges[labels] == c)),
                      np.flatnonzero(~forged & (labels != c)))
            for s in SCORINGS:
                for part, idx in zip(parts[s], groups, strict=True):
                    part.append(scored(emb[idx], emb[own], s))
        for p in cohort_powers:  # the same draw of references: one generator seeded with `draw`, classes in order
            raw = reference_distances(emb, labels, forges, references, seed=draw, cohort=True, cohort_power=p)
            for part, kind in zip(parts[f"nearest/cohort^{p:g}"], ("genuine", "skilled", "random"), strict=True):
                part.append(raw[kind])
        for s in names:
            genuine, skilled, random = (np.concatenate(p) for p in parts[s])
            for i, impostor in enumerate((skilled, random)):
                v = verification(genuine, impostor)
                out[s][i].append(v["eer"])
                out[s][i + 2].append(v["eer_threshold"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--references", type=int, default=5)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0,
                        help="the seed that drew the validation split (train's --split-seed, else its --seed)")
    parser.add_argument("--ensemble", action="store_true", help="score the models as one (concatenated embeddings)")
    parser.add_argument("--tta", type=int, default=0, metavar="PIXELS", help="also embed 4 views shifted by PIXELS")
    parser.add_argument("--cohort-powers", type=float, nargs="*", default=[], metavar="P",
                        help="also score nearest/cohort^P for each P (e.g. 0.125 0.25 0.375 0.5)")
    parser.add_argument("--orientation-weights", type=float, nargs="*", default=[], metavar="W",
                        help="also score each model with an orientation histogram appended at share W")
    parser.add_argument("--orientation-cells", type=int, nargs=2, default=list(OrientationHistogram.CELLS),
                        metavar=("ROWS", "COLUMNS"))
    parser.add_argument("--orientation-bins", type=int, default=OrientationHistogram.BINS)
    args = parser.parse_args()
    prepare_signatures()
    source = open_source(REPO / SIGNATURES / "train", forgery_suffix="_forg")
    print(f"{'model':<28} {'scoring':<20} {'skilled EER':>16} {'random EER':>16}   EER thresholds (mean), skilled / random")
    embedded, val, preprocess = [], None, None
    for path in args.models:
        model = load_model(path, runtime="torch" if args.tta else "auto")  # a stored graph has no views
        if args.tta:
            model.net.tta_shifts = [tuple(v) for v in shift_views(args.tta)]
        if val is None or model.preprocess != preprocess:
            preprocess, before = model.preprocess, val
            _, val = load_arrays(source, preprocess).split_genuine_classes(args.val_fraction, args.seed)
            if args.ensemble and before is not None and not np.array_equal(before.labels, val.labels):
                parser.error("--ensemble: the models' preprocessing gives another validation split")
        embedded.append((Path(path).name, model.embed_arrays(val.images).astype(np.float64)))
    if args.ensemble:
        embedded = [(f"ensemble of {len(embedded)}",
                     np.concatenate([e for _, e in embedded], 1) / np.sqrt(len(embedded)))]
    if args.orientation_weights:
        import torch

        images = torch.from_numpy(val.images)
        with torch.no_grad():
            embedded += [(f"{name} +orient {w:g}", OrientationHistogram(w, args.orientation_cells, args.orientation_bins)(
                torch.from_numpy(e.astype(np.float32)), images).numpy().astype(np.float64))
                for name, e in embedded for w in args.orientation_weights]
    for name, emb in embedded:
        rows = compare(emb, val.labels, val.forges, args.references, args.draws, tuple(args.cohort_powers))
        for s, (skilled, random, skilled_t, random_t) in rows.items():
            print(f"{name:<28} {s:<20} {np.mean(skilled):>8.4f} +- {np.std(skilled):.4f} "
                  f"{np.mean(random):>8.4f} +- {np.std(random):.4f}   {np.mean(skilled_t):.4f} / {np.mean(random_t):.4f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
