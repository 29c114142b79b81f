"""`twinsearch evaluate`: pair verification, N-way k-shot accuracy, Recall@1 and MAP@R of a model on a
labelled data set (classes it has never seen, for an honest one-shot figure).

    twinsearch evaluate --data data/omniglot/images_background_small2.zip --class-depth 2 \\
        --groups 'Japanese_(katakana)' Sanskrit Tagalog --way 20 --shot 1 --within-group \\
        --episodes 400 --json report.json --plots plots/

The JSON holds `oneshot.accuracy`, `pairs.accuracy` (at the model's calibrated EER threshold when it has
one), `pairs.roc_auc`, `pairs.eer`, `pairs.tar_at_far` (at FAR 1% and 0.1%), `recall_at_1`, `map_at_r`.

Signatures and other data with skilled forgeries (`NNN/` genuine, `NNN_forg/` forgeries of NNN):

    twinsearch evaluate --model signatures.tsm --data writers/ --references 5 1 3 10 --json report.json

enrolls R genuine images per class as its references and scores the class's other genuine images, its
forgeries and the other classes' genuine images against them with the gallery's class scoring. The JSON
holds the first R's figures under `references` (`count`, `skilled_eer`, `random_eer`, FAR and FRR at the
model's threshold) and every R's under `references.by_count`. Each EER comes with a 95% interval over
the classes (`skilled_eer_ci95`, `random_eer_ci95`: the classes drawn with replacement 1,000 times):
with a few dozen writers, which writers were measured moves an EER by several points. With `--cohort`
each class distance is divided by a power of the probe's distance to the nearest other class, as
`verify-class --cohort` does; the model's threshold does not apply to that score, so the report gives
each EER's own threshold (`skilled_eer_threshold`, `random_eer_threshold`) for use as the `--threshold`
of such calls. The classic figures above then use the genuine images only. When simple image statistics (background level, ink darkness, size) separate the
genuine images from the forgeries on their own, a warning says so: such data rewards a model for looking
at the paper or the pen instead of the signature.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

from ._errors import device_error, output_file_error, range_error, reports_data_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model file (default: the model shipped in the package)")
    parser.add_argument("--data", required=True, help="folder tree, zip of one, or idx folder (with --split)")
    parser.add_argument("--class-depth", type=int, default=1,
                        help="folder depth of classes (default 1: each top folder is a class; Omniglot: 2)")
    parser.add_argument("--split", choices=("train", "test"), help="idx folders: which split")
    parser.add_argument("--groups", nargs="*", default=[],
                        help="only these groups (e.g. alphabets; default: every group)")
    parser.add_argument("--way", type=int, default=20,
                        help="classes per one-shot episode, at least 2 (default 20)")
    parser.add_argument("--shot", type=int, default=1,
                        help="support images per class and episode, at least 1 (default 1)")
    parser.add_argument("--queries", type=int, default=1,
                        help="query images per class and episode, at least 1 (default 1)")
    parser.add_argument("--within-group", action="store_true",
                        help="all classes of an episode from one group (the folders above the classes, "
                             "--class-depth 2 or more; default: from the whole data set)")
    parser.add_argument("--episodes", type=int, default=400,
                        help="one-shot episodes, at least 1 (default 400)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the episodes, pairs and references (default 0)")
    parser.add_argument("--threshold", type=float,
                        help="pair decision distance, 0 to 2 (default: the model's EER one); with --cohort, the "
                             "threshold of the cohort score instead")
    parser.add_argument("--references", type=int, nargs="+", metavar="R",
                        help="reference-based verification with R genuine references per class (several values "
                             "allowed, e.g. 5 1 3 10; the first is the headline under `references` in the JSON; "
                             "default: none)")
    parser.add_argument("--scoring", choices=SCORINGS, default="nearest",
                        help="class scoring for --references (default: nearest, the gallery's default)")
    parser.add_argument("--cohort", action="store_true",
                        help="with --references: cohort-normalize each class distance by the probe's distance to "
                             "the nearest other class (as verify-class --cohort); the model's threshold does not "
                             "apply to that score: FAR and FRR are given only at --threshold, and the EER "
                             "thresholds are printed")
    parser.add_argument("--forgery-suffix", default="_forg",
                        help="class folders named <class><suffix> hold forgeries of <class> (default: _forg; "
                             "'' for none)")
    parser.add_argument("--json", metavar="PATH",
                        help="write the report as JSON to PATH (unlike the client commands, where --json is a "
                             "flag that prints JSON, this one takes a file name; default: none)")
    parser.add_argument("--plots", metavar="FOLDER",
                        help="folder for roc.png, det.png and distances.png, created if missing (default: none)")
    parser.add_argument("--device", help="cpu, cuda ... (default: cuda when present)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars while decoding and embedding")


SCORINGS = ("nearest", "prototype", "mean_of_k")


@reports_data_errors("evaluate")
def run(args: argparse.Namespace) -> int:
    import time

    import torch
    from tqdm import tqdm

    from ..data import open_source
    from ..errors import DataError, ImageError, ModelFileError
    from ..evaluation import evaluate_embeddings
    from ..evaluation.plots import write_plots
    from ..evaluation.references import reference_report
    from ..evaluation.shortcuts import input_statistics, raw_statistics, shortcut_statistics
    from ..model import default_model_path, load_model

    for message in (_value_error(args), device_error(args.device),
                    output_file_error("--json", args.json, "report.json"), _folder_error("--plots", args.plots)):
        if message is not None:
            return _usage(message)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_model(args.model, device=args.device)
    except ModelFileError as exc:
        return _usage(str(exc))
    source = open_source(args.data, args.class_depth, args.split, forgery_suffix=args.forgery_suffix or None)
    if args.groups:
        source = source.select_groups(args.groups)
    forges = source.forges
    forged = np.zeros(len(source), dtype=bool) if forges is None else forges[source.labels] >= 0
    # The classic figures (one-shot, pairs, retrieval) are about classes: forgery images are left out.
    genuine = ~forged
    labels = source.labels[genuine]
    classes = np.unique(labels)
    labels = np.searchsorted(classes, labels)
    group_names = list(dict.fromkeys(source.groups[c] for c in classes))
    class_groups = np.array([group_names.index(source.groups[c]) for c in classes], dtype=np.int64)
    # Told before anything is decoded, not as a traceback from deep inside the evaluation.
    pools = _episode_pools(labels, class_groups, args.shot + args.queries, args.within_group)
    message = _data_error(args, source.description, labels, class_groups, pools, forges is not None)
    if message is None and args.cohort:
        message = _cohort_error(args.references, source.labels, forges)
    if message is not None:
        raise DataError(message)
    t0 = time.monotonic()
    pre = model.preprocess
    arrays = np.empty((len(source),) + pre.shape, dtype=np.float32)
    raw_stats, input_stats = [], []
    bar = partial(tqdm, disable=args.no_progress, leave=False)
    decoding = bar(source.iter_raw(), total=len(source), desc="decoding", unit="img")
    for i, raw in decoding:
        try:
            if forges is None:
                unit = pre.to_unit(raw)
            else:  # decoded once, for the model's input and for the stored image's statistics
                decoded = pre.decode(raw)
                unit = pre.to_unit(decoded)
                raw_stats.append(raw_statistics(pre.gray(decoded)))
        except ImageError as exc:
            decoding.close()  # so that the message starts a line of its own
            raise DataError(f"{source.items[i]}: {exc}") from exc
        arrays[i] = pre.normalize(unit)
        if forges is not None:
            input_stats.append(input_statistics(unit))
    emb = _embed_with_progress(model, arrays, bar)
    embed_s = time.monotonic() - t0
    # With --cohort, --threshold is the cohort score's; the pair figures keep the model's threshold.
    threshold = None if args.cohort else args.threshold
    if threshold is None and model.calibration is not None:
        threshold = model.calibration.points["eer"].distance
    report, raw = evaluate_embeddings(emb[genuine], labels, way=args.way, shot=args.shot, episodes=args.episodes,
                                      query=args.queries, class_groups=class_groups, group_names=group_names,
                                      within_group=args.within_group, threshold=threshold, seed=args.seed)
    if args.threshold is not None and not args.cohort:
        report["pairs"]["threshold_source"] = "command line"
    report["model"] = {"name": model.name, "fingerprint": model.fingerprint,
                       "path": str(args.model or default_model_path())}
    report["data"].update(source=source.description, groups=group_names)
    if forges is not None:
        report["data"].update(forgery_classes=int((forges >= 0).sum()), forgeries=int(forged.sum()))
        report["shortcuts"] = {"stored": shortcut_statistics(raw_stats, forged),
                               "model_input": shortcut_statistics(input_stats, forged)}
    reference_raw = {}
    # A cohort-normalized score is not on the model's distance scale: only a threshold given for it applies.
    ref_threshold = args.threshold if args.cohort else threshold
    for count in args.references or []:
        rep, reference_raw[count] = reference_report(emb, source.labels, forges, count, threshold=ref_threshold,
                                                     scoring=args.scoring, seed=args.seed, cohort=args.cohort)
        if ref_threshold is not None:
            rep["threshold_source"] = "command line" if args.cohort else report["pairs"]["threshold_source"]
        if "references" not in report:
            report["references"] = {**rep, "by_count": {}}
        report["references"]["by_count"][str(count)] = rep
    report["timing"] = {"decode_and_embed_s": round(embed_s, 2), "device": str(model.device)}
    if args.plots:
        report["plots"] = write_plots(raw["genuine"], raw["impostor"], args.plots, title=model.name,
                                      threshold=report["pairs"]["threshold"])
        if args.references:
            count = args.references[0]
            r = reference_raw[count]
            for kind in ("skilled", "random"):
                if len(r["genuine"]) and len(r[kind]):
                    report["plots"] += write_plots(r["genuine"], r[kind], Path(args.plots) / f"references-{kind}",
                                                   title=f"{model.name}, {count} references, {kind} forgeries",
                                                   threshold=ref_threshold)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    o, p = report["oneshot"], report["pairs"]
    lines = [
        f"model        {model.name} ({model.fingerprint})",
        f"data         {source.description}: {report['data']['classes']} classes, {report['data']['images']} images",
        f"one-shot     {o['way']}-way {o['shot']}-shot{' within group' if o['within_group'] else ''}, "
        f"{o['episodes']} episodes (mean way {o['mean_way']:.1f}): {o['accuracy']:.4f} +- {o['ci95']:.4f}",
    ]
    for g, v in o["per_group"].items():
        lines.append(f"             {g}: {v['accuracy']:.4f} ({v['episodes']} episodes)")
    lines += [
        f"pairs        {p['genuine_pairs']} genuine + {p['impostor_pairs']} impostor: accuracy {p['accuracy']:.4f} "
        f"at d <= {p['threshold']:.4f} ({p['threshold_source']}), ROC AUC {p['roc_auc']:.4f}, EER {p['eer']:.4f}",
        f"             TAR at FAR 1% {p['tar_at_far']['far_1']:.4f}, at FAR 0.1% {p['tar_at_far']['far_0_1']:.4f}",
        f"retrieval    Recall@1 {report['recall_at_1']:.4f}, MAP@R {report['map_at_r']:.4f}",
    ]
    for count in args.references or []:
        r = report["references"]["by_count"][str(count)]
        if not r["classes"]:
            lines.append(f"references   R={count}: no class has more than {count} genuine images; nothing to score")
            continue
        line = (f"references   R={count} ({args.scoring}{', cohort' if args.cohort else ''}), {r['classes']} classes, "
                f"{r['genuine_probes']} genuine probes: random-forgery EER {_pct(r['random_eer'])}"
                f"{_interval(r['random_eer_ci95'])}{_at_threshold(r, 'random') if args.cohort else ''}")
        if r["skilled_forgeries"]:
            line += (f", skilled-forgery EER {_pct(r['skilled_eer'])}{_interval(r['skilled_eer_ci95'])}"
                     f"{_at_threshold(r, 'skilled') if args.cohort else ''} ({r['skilled_forgeries']} forgeries)")
        if r.get("threshold") is not None:
            line += f"; at {'score' if args.cohort else 'd'} <= {r['threshold']:.4f}: FRR {_pct(r['frr'])}"
            if r["far_skilled"] is not None:
                line += f", FAR skilled {_pct(r['far_skilled'])}"
            line += f", FAR random {_pct(r['far_random'])}"
        lines.append(line)
    if args.cohort and args.references:
        lines.append("             a cohort threshold serves every cohort call of a gallery that gives none: twinsearch "
                     "galleries create NAME --cohort-threshold T (measured on classes like yours, in a gallery of "
                     "about the size served)")
    print("\n".join(lines))
    if o["mean_way"] < o["way"]:
        print(f"twinsearch evaluate: warning: the one-shot figure is {o['mean_way']:.1f}-way, not {o['way']}-way: "
              f"{_fewer_classes(pools, len(classes), args)}", file=sys.stderr)
    for where, stats in (report.get("shortcuts") or {}).items():
        for name in stats["flagged"]:
            s = stats[name]
            print(f"twinsearch evaluate: warning: in this data the {name.replace('_', ' ')} of the "
                  f"{'stored images' if where == 'stored' else 'images as the model sees them'} alone separates "
                  f"genuine images from forgeries (ROC AUC {s['auc']:.2f}; median {s['genuine_median']:.3g} "
                  f"genuine vs {s['forged_median']:.3g} forged). Figures on such data can reward looking at the "
                  f"scan instead of the signature" + ("; the model's preprocessing removes it"
                                                      if where == "stored" and name not in
                                                      report["shortcuts"]["model_input"]["flagged"] else ""),
                  file=sys.stderr)
    return 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _interval(ci: list[float] | None) -> str:
    """" (95% over classes: a to b%)" for an EER's interval, or "" when there is none."""
    return "" if ci is None else f" (95% over classes: {100 * ci[0]:.1f} to {100 * ci[1]:.1f}%)"


def _at_threshold(r: dict, kind: str) -> str:
    """" at score <= T" for the EER of `kind` ("skilled" or "random"), or "" when it was not measured."""
    t = r.get(f"{kind}_eer_threshold")
    return "" if t is None else f" at score <= {t:.4f}"


# Flags whose values must lie in a range (`range_error`): (flag, attribute, lowest, highest).
_RANGES = (("--way", "way", [2], None), ("--shot", "shot", [1], None), ("--queries", "queries", [1], None),
           ("--episodes", "episodes", [1], None), ("--threads", "threads", [0], None), ("--seed", "seed", [0], None),
           ("--class-depth", "class_depth", [1], None))


def _value_error(args: argparse.Namespace) -> str | None:
    """The usage message for a flag value that makes no sense, or None: checked before the model loads."""
    message = range_error(args, _RANGES)
    if message is not None:
        return message
    if args.references and min(args.references) < 1:
        return f"--references must be at least 1, got {min(args.references)}"
    if args.cohort and not args.references:
        return "--cohort applies to --references; give --references R"
    t = args.threshold
    if t is not None:
        if args.cohort and not t >= 0:
            return f"--threshold of a cohort score must be 0 or more, got {t:g}"
        if not args.cohort and not 0 <= t <= 2:
            return (f"--threshold is a distance between unit vectors, which lies between 0 and 2, got {t:g}; "
                    "leave it out for the model's calibrated threshold")
    return None


def _folder_error(flag: str, path: str | None) -> str | None:
    """The usage message for an output folder (created if missing) that cannot be made or written, or None."""
    if not path:
        return None
    target = Path(path)
    if target.exists() and not target.is_dir():
        return f"{flag} {path} is a file; give a folder (created if missing)"
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        return f"{flag} {path}: {existing} is a file, so the folder cannot be created; choose another folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{flag} {path}: the folder {existing} is not writable"
    return None


def _episode_pools(labels: np.ndarray, class_groups: np.ndarray, per_class: int, within_group: bool) -> list[int]:
    """The classes an episode can draw from, as the episode sampler forms them: one pool of every class with
    at least `per_class` images, or, `within_group`, one per group with two or more such classes. Sizes."""
    counts = np.bincount(labels, minlength=len(class_groups)) if len(labels) else np.zeros(0, dtype=np.int64)
    eligible = np.flatnonzero(counts >= per_class)
    if not within_group:
        return [len(eligible)]
    sizes = np.bincount(class_groups[eligible]) if len(eligible) else np.zeros(0, dtype=np.int64)
    return [int(n) for n in sizes if n >= 2]


def _data_error(args: argparse.Namespace, description: str, labels: np.ndarray, class_groups: np.ndarray,
                pools: list[int], forgeries: bool) -> str | None:
    """What the data lacks for the evaluation `args` asks for (classes, images per class, groups), or None."""
    counts = np.bincount(labels, minlength=len(class_groups)) if len(labels) else np.zeros(0, dtype=np.int64)
    if len(counts) < 2:
        return (f"evaluation compares classes, and {description} holds {len(counts)} class"
                f"{'' if len(counts) == 1 else 'es'}{' of genuine images' if forgeries else ''}: give a folder "
                "with a sub-folder of images per class, two or more of them (check --class-depth and --groups)")
    per_class = args.shot + args.queries
    if int((counts >= 2).sum()) < 2:
        return (f"pair verification, its calibration and one-shot episodes need at least 2 classes with 2 or more "
                f"images each, and {description} has {int((counts >= 2).sum())} such classes of its {len(counts)}: "
                "give more images per class")
    eligible = int((counts >= per_class).sum())
    if eligible < 2:
        return (f"--shot {args.shot} with --queries {args.queries} needs at least 2 classes with {per_class} or more "
                f"images each, and {description} has {eligible} such classes (the largest holds {int(counts.max())} "
                f"images): lower --shot or --queries")
    if args.within_group and not pools:
        return (f"--within-group draws each episode's classes from one group (the folders above the classes), and "
                f"no group of {description} holds 2 classes with {per_class} or more images"
                + (": at --class-depth 1 each class is a group of its own; give --class-depth 2 or more for a "
                   "group/class tree, or leave out --within-group" if args.class_depth == 1
                   else "; leave out --within-group"))
    return None


def _cohort_error(references: list[int], labels: np.ndarray, forges: np.ndarray | None) -> str | None:
    """With --cohort: the usage message for an R that leaves fewer than two classes with references, or None."""
    forged = np.zeros(len(labels), dtype=bool) if forges is None else forges[labels] >= 0
    counts = np.bincount(labels[~forged]) if len(labels) else np.zeros(0, dtype=np.int64)
    for count in references:
        if int((counts > count).sum()) < 2:
            return (f"--cohort needs at least 2 classes with more than R genuine images (R references and a "
                    f"probe), and at --references {count} there are {int((counts > count).sum())}: lower R")
    return None


def _fewer_classes(pools: list[int], classes: int, args: argparse.Namespace) -> str:
    """Why episodes hold fewer classes than --way: the classes there are to draw from."""
    if not args.within_group:
        enough = f" with {args.shot + args.queries} or more images" if pools[0] < classes else ""
        return f"the data holds only {pools[0]} classes{enough}"
    small = [n for n in pools if n < args.way]
    sizes = f"{min(small)}" if min(small) == max(small) else f"{min(small)} to {max(small)}"
    return (f"episodes within a group hold at most that group's classes, and {len(small)} of the {len(pools)} "
            f"groups hold fewer than {args.way} ({sizes} classes)")


def _embed_with_progress(model, arrays: np.ndarray, bar) -> np.ndarray:
    """`model.embed_arrays(arrays)` a batch at a time under a progress bar (`bar`: tqdm or a partial of it): with test-time views
    on a large data set embedding takes as long as decoding, and is shown as decoding is."""
    out = np.empty((len(arrays), model.dim), dtype=np.float32)
    step = model.batch_size
    with bar(total=len(arrays), desc="embedding", unit="img") as progress:
        for start in range(0, len(arrays), step):
            out[start:start + step] = model.embed_arrays(arrays[start:start + step])
            progress.update(len(out[start:start + step]))
    return out


def _usage(text: str) -> int:
    print(f"twinsearch evaluate: {text}", file=sys.stderr)
    return 2
