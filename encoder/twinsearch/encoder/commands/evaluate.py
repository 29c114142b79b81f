"""`twinsearch evaluate`: pair verification, N-way k-shot accuracy, Recall@1 and MAP@R of a model on a
labelled data set (classes it has never seen, for an honest one-shot figure).

    twinsearch evaluate --data data/omniglot/images_background_small2.zip --class-depth 2 \\
        --groups 'Japanese_(katakana)' Sanskrit Tagalog --way 20 --shot 1 --within-group \\
        --episodes 400 --json report.json --plots plots/

The JSON holds `oneshot.accuracy`, `pairs.accuracy` (at the model's calibrated EER threshold when it has
one), `pairs.roc_auc`, `pairs.eer`, `pairs.tar_at_far` (at FAR 1% and 0.1%), `recall_at_1`, `map_at_r`.
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
    parser.add_argument("--threshold", type=float, help="pair decision distance (default: the model's EER one)")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--plots", help="folder for roc.png, det.png and distances.png")
    parser.add_argument("--device", help="cpu, cuda ... (default: cuda when present)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


@reports_data_errors("evaluate")
def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    import torch
    from tqdm import tqdm

    from ..data import open_source
    from ..errors import DataError, ImageError, ModelFileError
    from ..evaluation import evaluate_embeddings
    from ..evaluation.plots import write_plots
    from ..model import default_model_path, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_model(args.model, device=args.device)
    except ModelFileError as exc:
        print(f"twinsearch evaluate: {exc}", file=sys.stderr)
        return 2
    source = open_source(args.data, args.class_depth, args.split)
    if args.groups:
        source = source.select_groups(args.groups)
    t0 = time.monotonic()
    pre = model.preprocess
    arrays = np.empty((len(source),) + pre.shape, dtype=np.float32)
    for i, raw in tqdm(source.iter_raw(), total=len(source), desc="decoding", unit="img", leave=False):
        try:
            arrays[i] = pre.load(raw)
        except ImageError as exc:
            raise DataError(f"{source.items[i]}: {exc}") from exc
    emb = model.embed_arrays(arrays)
    embed_s = time.monotonic() - t0
    group_names = list(dict.fromkeys(source.groups))
    class_groups = np.array([group_names.index(g) for g in source.groups], dtype=np.int64)
    threshold = args.threshold
    if threshold is None and model.calibration is not None:
        threshold = model.calibration.points["eer"].distance
    report, raw = evaluate_embeddings(emb, source.labels, way=args.way, shot=args.shot, episodes=args.episodes,
                                      query=args.queries, class_groups=class_groups, group_names=group_names,
                                      within_group=args.within_group, threshold=threshold, seed=args.seed)
    if args.threshold is not None:
        report["pairs"]["threshold_source"] = "command line"
    report["model"] = {"name": model.name, "fingerprint": model.fingerprint,
                       "path": str(args.model or default_model_path())}
    report["data"].update(source=source.description, groups=group_names)
    report["timing"] = {"decode_and_embed_s": round(embed_s, 2), "device": str(model.device)}
    if args.plots:
        report["plots"] = write_plots(raw["genuine"], raw["impostor"], args.plots, title=model.name,
                                      threshold=report["pairs"]["threshold"])
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
    print("\n".join(lines))
    return 0
