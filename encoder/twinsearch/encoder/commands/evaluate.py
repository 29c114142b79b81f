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
import sys

from ._errors import reports_data_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model file (default: the model shipped in the package)")
    parser.add_argument("--data", required=True, help="folder tree, zip of one, or idx folder (with --split)")
    parser.add_argument("--class-depth", type=int, default=1, help="folder depth of classes (Omniglot: 2)")
    parser.add_argument("--split", choices=("train", "test"), help="idx folders: which split")
    parser.add_argument("--groups", nargs="*", default=[], help="only these groups (e.g. alphabets)")
    parser.add_argument("--way", type=int, default=20)
    parser.add_argument("--shot", type=int, default=1)
    parser.add_argument("--queries", type=int, default=1, help="queries per class and episode")
    parser.add_argument("--within-group", action="store_true", help="all classes of an episode from one group")
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, help="pair decision distance (default: the model's EER one); with --cohort, the "
                                                          "threshold of the cohort score instead")
    parser.add_argument("--references", type=int, nargs="+", metavar="R",
                        help="reference-based verification with R genuine references per class (several values "
                             "allowed, e.g. 5 1 3 10; the first is the headline under `references` in the JSON)")
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
                             "flag that prints JSON, this one takes a file name)")
    parser.add_argument("--plots", help="folder for roc.png, det.png and distances.png")
    parser.add_argument("--device", help="cpu, cuda ... (default: cuda when present)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


SCORINGS = ("nearest", "prototype", "mean_of_k")


@reports_data_errors("evaluate")
def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import numpy as np
    import torch
    from tqdm import tqdm

    from ..data import open_source
    from ..errors import DataError, ImageError, ModelFileError
    from ..evaluation import evaluate_embeddings
    from ..evaluation.plots import write_plots
    from ..evaluation.references import reference_report
    from ..evaluation.shortcuts import input_statistics, raw_statistics, shortcut_statistics
    from ..model import default_model_path, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.references and min(args.references) < 1:
        print("twinsearch evaluate: --references must be at least 1", file=sys.stderr)
        return 2
    if args.cohort and not args.references:
        print("twinsearch evaluate: --cohort applies to --references; give --references R", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model, device=args.device)
    except ModelFileError as exc:
        print(f"twinsearch evaluate: {exc}", file=sys.stderr)
        return 2
    source = open_source(args.data, args.class_depth, args.split, forgery_suffix=args.forgery_suffix or None)
    if args.groups:
        source = source.select_groups(args.groups)
    forges = source.forges
    forged = np.zeros(len(source), dtype=bool) if forges is None else forges[source.labels] >= 0
    t0 = time.monotonic()
    pre = model.preprocess
    arrays = np.empty((len(source),) + pre.shape, dtype=np.float32)
    raw_stats, input_stats = [], []
    for i, raw in tqdm(source.iter_raw(), total=len(source), desc="decoding", unit="img", leave=False):
        try:
            if forges is None:
                unit = pre.to_unit(raw)
            else:  # decoded once, for the model's input and for the stored image's statistics
                decoded = pre.decode(raw)
                unit = pre.to_unit(decoded)
                raw_stats.append(raw_statistics(pre.gray(decoded)))
        except ImageError as exc:
            raise DataError(f"{source.items[i]}: {exc}") from exc
        arrays[i] = pre.normalize(unit)
        if forges is not None:
            input_stats.append(input_statistics(unit))
    emb = model.embed_arrays(arrays)
    embed_s = time.monotonic() - t0
    # With --cohort, --threshold is the cohort score's; the pair figures keep the model's threshold.
    threshold = None if args.cohort else args.threshold
    if threshold is None and model.calibration is not None:
        threshold = model.calibration.points["eer"].distance
    # The classic figures (one-shot, pairs, retrieval) are about classes: forgery images are left out.
    genuine = ~forged
    labels = source.labels[genuine]
    classes = np.unique(labels)
    labels = np.searchsorted(classes, labels)
    group_names = list(dict.fromkeys(source.groups[c] for c in classes))
    class_groups = np.array([group_names.index(source.groups[c]) for c in classes], dtype=np.int64)
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
