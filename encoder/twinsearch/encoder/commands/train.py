"""`twinsearch train`: train an encoder on a folder tree (or zip, or idx files) and write a model file.

The default Omniglot model was made with (see its card for the exact command):

    twinsearch train --data data/omniglot/images_background_small1.zip --class-depth 2 \\
        --calib-data data/omniglot/images_background_small2.zip \\
        --calib-groups 'Japanese_(katakana)' Sanskrit Tagalog --invert --size 32 --rotations \\
        --loss prototypical -P 60 -K 2 --groups-per-batch 2 --aug-elastic 0.03 --tta 2 --threads 2 \\
        --val-every 200 --minutes 20 --name omniglot --out omniglot.tsm

Validation (best checkpoint) uses classes held out of the training data (`--val-fraction`); calibration and
the card's evaluation use `--calib-data` when given (classes the model never saw), else the validation split.

Presets carry the measured recipes (`--preset characters | signatures | digits | clothing | photos`, see
`twinsearch.encoder.presets`); flags given beside a preset override it. Signatures, with forgeries in
`NNN_forg/` beside each writer's `NNN/`:

    twinsearch train --preset signatures --data writers/ --minutes 20 --out signatures.tsm
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ..presets import PRESETS, preset
from ._errors import reports_data_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="start from a measured recipe for this kind of data; flags given beside it override "
                             "it, --no-invert and the like turn off what it turns on (the card records the preset)")
    d = parser.add_argument_group("data")
    d.add_argument("--data", required=True, help="folder tree, zip of one, or idx folder (with --split)")
    d.add_argument("--class-depth", type=int, default=1, help="folder depth of classes (Omniglot: 2)")
    d.add_argument("--split", choices=("train", "test"), help="idx folders: which split")
    d.add_argument("--groups", nargs="*", default=[], help="train only on these groups (class depth >= 2)")
    d.add_argument("--exclude-groups", nargs="*", default=[], help="leave these groups out of training")
    d.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the training classes held out for validation (0: none; keep the last step)")
    d.add_argument("--forgery-suffix", default="_forg",
                   help="class folders named <class><suffix> hold skilled forgeries of <class>: never its "
                        "positives, batched beside it as negatives, used for validation and calibration "
                        "(default: _forg; '' for none)")
    d.add_argument("--val-by", choices=("classes", "images"), default="classes",
                   help="hold out whole classes (open set, default) or images of every class (closed set)")
    d.add_argument("--calib-data", help="held-out data for calibration and the card's evaluation "
                                        "(default: the validation split)")
    d.add_argument("--calib-class-depth", type=int, default=None)
    d.add_argument("--calib-split", choices=("train", "test"))
    d.add_argument("--calib-groups", nargs="*", default=[])
    d.add_argument("--probability", choices=("logistic", "isotonic"), default="logistic",
                   help="calibrated distance-to-probability mapping stored in the card (default: logistic)")

    p = parser.add_argument_group("input")
    p.add_argument("--size", type=int, nargs="+", default=[56], metavar=("H", "W"),
                   help="input height and width in pixels (one number: square); signatures: 96 192")
    p.add_argument("--channels", type=int, choices=(1, 3), default=1)
    p.add_argument("--resize", choices=("stretch", "fit"), default="stretch",
                   help="stretch to the size, or fit (keep the aspect ratio, centre, pad with the background)")
    p.add_argument("--invert", action=argparse.BooleanOptionalAction, default=False, help="dark ink on a light background (Omniglot)")
    p.add_argument("--background-removal", choices=("none", "otsu"), default="none",
                   help="ink on paper: pixels lighter than the image's Otsu threshold become white, the ink "
                        "keeps its grey levels (so the paper's colour says nothing)")
    p.add_argument("--binarize", default="none", metavar="otsu|LEVEL",
                   help="ink on paper: black ink on white by Otsu's threshold, or by a fixed grey level in (0, 1) "
                        "(so neither does the ink's darkness); default none")
    p.add_argument("--crop-to-ink", action=argparse.BooleanOptionalAction, default=False,
                   help="ink on paper: crop to the ink's bounding box before resizing (with --resize fit: centred)")
    p.add_argument("--mean", type=float, nargs="+", default=[0.0])
    p.add_argument("--std", type=float, nargs="+", default=[1.0])

    m = parser.add_argument_group("model")
    m.add_argument("--backbone", choices=("conv4", "koch", "signet", "resnet"), default="conv4")
    m.add_argument("--widths", type=int, nargs="+", help="conv4/resnet channel widths, e.g. 64 64 64 64")
    m.add_argument("--pool", choices=("flatten", "avg"), help="conv4: flatten (default) or average-pool")
    m.add_argument("--convs-per-block", type=int, nargs="+", metavar="N",
                   help="conv4: 3x3 convs before each pool, one number for all blocks or one per block "
                        "(default 1)")
    m.add_argument("--stem-stride", type=int, choices=(1, 2), help="resnet: stride of the first convolution "
                                                                    "(2: a quarter of the cost; default 1)")
    m.add_argument("--dim", type=int, default=128, help="embedding dimension")
    m.add_argument("--tta", type=int, default=0, metavar="PIXELS",
                   help="embed each image also shifted by this many pixels up, down, left and right, and "
                        "average (one embedding; 5x the inference cost; 0: off)")
    m.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=False,
                   help="also embed the left-right mirror of each view and average (2x the inference cost; "
                        "for mirror-symmetric classes such as clothing, not characters)")
    m.add_argument("--dropout", type=float, default=0.0, help="dropout before the embedding layer")
    m.add_argument("--posterior-weight", type=float, default=0.0, metavar="W",
                   help="closed-set data only (the classes served are the training classes; needs --loss "
                        "normsoftmax and --val-by images): append the square root of the class posterior over "
                        "the training classes to each embedding, taking share W of the squared distance; its "
                        "temperature is fitted on the validation images. 0 (default): plain embedding, for "
                        "enrolling classes never trained on")

    t = parser.add_argument_group("training")
    t.add_argument("--loss", choices=("normsoftmax", "prototypical", "triplet", "contrastive", "contrastive-pairs"),
                   default="prototypical",
                   help="prototypical (default: measured best on Omniglot, 0.71 vs 0.66 for normsoftmax in the "
                        "same 6-minute 48 px run), normsoftmax (closed-set data such as Fashion-MNIST), triplet, "
                        "contrastive (in-batch over P x K), contrastive-pairs (the classic pair builder)")
    t.add_argument("--margin", type=float, default=None, help="loss margin (default: the loss's own: triplet 0.2, "
                                                              "contrastive 1.0, normsoftmax 0.1)")
    t.add_argument("--scale", type=float, default=None,
                   help="logit scale (default: the loss's own: normsoftmax 16, prototypical 10)")
    t.add_argument("--mining", choices=("batch_hard", "semi_hard", "all"), default="batch_hard")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("-P", "--classes-per-batch", type=int, default=64)
    t.add_argument("-K", "--images-per-class", type=int, default=2)
    t.add_argument("--groups-per-batch", type=int, default=0,
                   help="draw each batch's classes from this many groups only (hard batches; 0: any classes)")
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--minutes", type=float, default=0.0, help="time budget (wall clock) in minutes")
    t.add_argument("--steps", type=int, default=0, help="step limit")
    t.add_argument("--rotations", action=argparse.BooleanOptionalAction, default=False, help="rotated copies as extra classes (characters)")
    t.add_argument("--no-augment", action="store_true", help="no random affine distortions")
    t.add_argument("--aug-rotation", type=float, default=10.0, help="degrees")
    t.add_argument("--aug-shear", type=float, default=0.3, help="radians")
    t.add_argument("--aug-scale", type=float, nargs=2, default=[0.8, 1.2])
    t.add_argument("--aug-translate", type=float, default=0.1, help="fraction of the size")
    t.add_argument("--aug-thickness", type=float, default=0.0, help="probability of stroke dilation/erosion")
    t.add_argument("--aug-elastic", type=float, default=0.0, help="elastic distortion strength (fraction of size)")
    t.add_argument("--aug-hflip", type=float, default=0.0, help="probability of a left-right mirror")
    t.add_argument("--val-every", type=int, default=200, help="steps between validations")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    t.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: forward pass in bfloat16 (faster on CPUs with AVX-512 BF16 or AMX and on recent "
                        "GPUs); weights, loss and the saved model stay fp32")
    t.add_argument("--checkpoint", help="checkpoint file (default: OUT.ckpt)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint")

    o = parser.add_argument_group("output")
    o.add_argument("--out", required=True, help="model file to write")
    o.add_argument("--name", help="model name (default: the output file's stem)")
    o.add_argument("--graph", action=argparse.BooleanOptionalAction, default=True,
                   help="also store the network as an ONNX graph in the model file, which the server runs with "
                        "ONNX Runtime on CPU, several times faster than PyTorch for small networks "
                        "(default: on)")
    o.add_argument("--eval-way", type=int, default=20)
    o.add_argument("--eval-episodes", type=int, default=400)
    o.add_argument("--no-progress", action="store_true", help="no progress bar")


# Steps timed for the early speed report, and fewer steps than this in the budget earn a warning.
SPEED_STEPS = 20
FEW_STEPS = 300
# Below this standard deviation of held-out distances the embedding counts as collapsed.
COLLAPSED_SPREAD = 0.01
# References per class for the card's reference-based figures (at most; fewer where classes are small).
CARD_REFERENCES = 5
# Impostor pairs below which the FAR 0.1% threshold rests on fewer than 10 false accepts.
SMALL_CALIBRATION = 10_000


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv`; with --preset, the preset's settings become the defaults, so flags given win."""
    args = parser.parse_args(argv)
    if args.preset:
        parser.set_defaults(**preset(args.preset))
        args = parser.parse_args(argv)
    return args


def card_evaluation(emb, data, way: int, episodes: int, threshold: float, seed: int) -> dict:
    """The card's evaluation of held-out `data` (ImageArrays) embedded as `emb`: one-shot, pairs and retrieval
    over the genuine classes; with forgeries, also the reference-based figures (up to 5 references)."""
    import numpy as np

    from ..evaluation import evaluate_embeddings
    from ..evaluation.references import reference_report, references_allowed

    forged = data.forgery_of_images() >= 0
    labels = data.labels[~forged]
    classes = np.unique(labels)
    genuine = data.subset_classes(classes)
    within = len(set(genuine.groups)) > 1 and len(set(genuine.groups)) < genuine.num_classes
    report, _ = evaluate_embeddings(emb[~forged], np.searchsorted(classes, labels), way=way, shot=1,
                                    episodes=episodes, class_groups=genuine.group_labels(),
                                    group_names=list(dict.fromkeys(genuine.groups)), within_group=within,
                                    threshold=threshold, seed=seed)
    if forged.any():
        refs = references_allowed(labels, CARD_REFERENCES)
        report["references"], _ = reference_report(emb, data.labels, data.forges, refs, threshold=threshold,
                                                   seed=seed)
    return report


def _config(args: argparse.Namespace):
    from ..training import TrainConfig

    backbone_args: dict = {}
    if args.widths:
        backbone_args["widths"] = list(args.widths)
    if args.pool:
        backbone_args["pool"] = args.pool
    if args.stem_stride:
        backbone_args["stem_stride"] = args.stem_stride
    if args.convs_per_block:
        cpb = list(args.convs_per_block)
        backbone_args["convs_per_block"] = cpb[0] if len(cpb) == 1 else cpb
    augment = None if args.no_augment else {
        "rotation": args.aug_rotation, "shear": args.aug_shear, "scale": list(args.aug_scale),
        "translate": args.aug_translate, "thickness": args.aug_thickness,
        "elastic": args.aug_elastic, "hflip": args.aug_hflip}
    t = args.tta
    return TrainConfig(
        backbone=args.backbone, backbone_args=backbone_args, dim=args.dim,
        head_args={"dropout": args.dropout} if args.dropout else {},
        tta_shifts=[[t, 0], [-t, 0], [0, t], [0, -t]] if t else [], tta_flip=args.tta_flip,
        posterior_weight=args.posterior_weight,
        loss=args.loss, margin=args.margin, scale=args.scale, mining=args.mining, label_smoothing=args.label_smoothing,
        classes_per_batch=args.classes_per_batch, images_per_class=args.images_per_class,
        groups_per_batch=args.groups_per_batch, lr=args.lr, weight_decay=args.weight_decay, steps=args.steps,
        minutes=args.minutes, rotations=args.rotations, augment=augment, val_every=args.val_every,
        seed=args.seed, threads=args.threads, precision=args.precision)


@reports_data_errors("train")
def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..data import load_arrays, open_source
    from ..evaluation import calibrate
    from ..model import EncoderModel
    from ..preprocess import Preprocess
    from ..training import Trainer
    from ..training.trainer import distance_spread

    command = "twinsearch " + shlex.join(sys.argv[1:])
    if len(args.size) > 2:
        print("twinsearch train: --size takes one number (square) or two (height width)", file=sys.stderr)
        return 2
    try:
        binarize = args.binarize if args.binarize in ("none", "otsu") else float(args.binarize)
    except ValueError:
        print(f"twinsearch train: --binarize takes none, otsu or a grey level in (0, 1), got {args.binarize!r}",
              file=sys.stderr)
        return 2
    if not args.minutes and not args.steps:
        print("twinsearch train: give --minutes, --steps or both", file=sys.stderr)
        return 2
    if args.posterior_weight and (args.loss != "normsoftmax" or args.val_by != "images" or args.val_fraction <= 0):
        print("twinsearch train: --posterior-weight needs --loss normsoftmax and validation images of the "
              "training classes (--val-by images, --val-fraction > 0)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    config = _config(args)
    height, width = args.size[0], args.size[-1]
    try:
        preprocess = Preprocess(width=width, height=height, channels=args.channels, resize=args.resize,
                                invert=args.invert, mean=tuple(args.mean), std=tuple(args.std),
                                background_removal=args.background_removal, binarize=binarize,
                                crop_to_ink=args.crop_to_ink)
    except ValueError as exc:
        print(f"twinsearch train: {exc}", file=sys.stderr)
        return 2
    source = open_source(args.data, args.class_depth, args.split, forgery_suffix=args.forgery_suffix or None)
    if args.groups or args.exclude_groups:
        source = source.select_groups(args.groups, args.exclude_groups)
    with tqdm(total=len(source), desc="decoding", unit="img", disable=args.no_progress, leave=False) as bar:
        everything = load_arrays(source, preprocess, progress=lambda i, n: bar.update(1))

    # Validation split: whole classes (open set) or a fraction of each class's images (closed set).
    train, val = everything, None
    if args.val_fraction > 0:
        if args.val_by == "classes":
            train, val = everything.split_genuine_classes(args.val_fraction, args.seed)
        else:
            rng = np.random.default_rng(args.seed)
            mask = rng.random(len(everything)) < args.val_fraction
            train, val = everything.subset_images(~mask), everything.subset_images(mask)

    calib = val
    calib_summary = None
    if args.calib_data:
        csrc = open_source(args.calib_data, args.calib_class_depth or args.class_depth, args.calib_split,
                           forgery_suffix=args.forgery_suffix or None)
        if args.calib_groups:
            csrc = csrc.select_groups(args.calib_groups)
        calib = load_arrays(csrc, preprocess)
        calib_summary = csrc.summary()

    bar = tqdm(total=1000, desc="training", unit="‰", disable=args.no_progress,
               bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
    status: dict = {}
    warnings: list[str] = []
    budget_s = 60.0 * args.minutes
    speed_at = {"t0": None}

    def warn(text: str) -> None:
        warnings.append(text)
        tqdm.write(f"twinsearch train: warning: {text}", file=sys.stderr)

    def report_speed(step: int) -> None:
        """After the first steps: steps per second, and what the budget allows at that pace."""
        import time

        if step == 5:
            speed_at["t0"] = time.monotonic()
        if step != SPEED_STEPS + 5 or speed_at["t0"] is None:
            return
        rate = SPEED_STEPS / max(time.monotonic() - speed_at["t0"], 1e-9)
        per_step = config.classes_per_batch * config.images_per_class * (2 if train.forges is not None else 1)
        text = f"{rate:.2f} steps/s (about {rate * per_step:.0f} images/s)"
        if budget_s:
            allowed = int(rate * budget_s)
            text += f"; the {args.minutes:g}-minute budget allows about {allowed} steps"
            if allowed < FEW_STEPS and (not args.steps or args.steps > allowed):
                warn(f"at {rate:.2f} steps/s the budget allows only about {allowed} steps, too few for this "
                     f"size and backbone to learn much: try a smaller --size, --precision bf16, a lighter "
                     f"--backbone, or more --minutes")
        tqdm.write(f"twinsearch train: {text}", file=sys.stderr)

    def on_event(event: dict) -> None:
        if event["kind"] == "step":
            report_speed(event["step"])
            bar.update(int(event["progress"] * 1000) - bar.n)
            status.update(step=event["step"], loss=f"{event['loss']:.3f}", lr=f"{event['lr']:.2e}")
        else:
            status.update(val=f"{event['score']:.3f}", best=f"{event['best']:.3f}",
                          r1=f"{event['val_recall_at_1']:.3f}")
        if event["kind"] == "val" or event["step"] % 10 == 0:
            bar.set_postfix(status, refresh=False)

    checkpoint = args.checkpoint or f"{args.out}.ckpt"
    try:
        trainer = Trainer(config, preprocess, train, val, device=args.device, checkpoint=checkpoint,
                          callback=on_event)
    except ValueError as exc:
        bar.close()
        print(f"twinsearch train: {exc}", file=sys.stderr)
        return 2
    try:
        result = trainer.fit(resume=args.resume)
    except (FileNotFoundError, ValueError) as exc:
        bar.close()
        print(f"twinsearch train: cannot resume: {exc}", file=sys.stderr)
        return 2
    bar.update(1000 - bar.n)
    bar.close()

    from pathlib import Path

    name = args.name or Path(args.out).name.split(".")[0]
    model = EncoderModel.create(result.net, result.architecture, preprocess, name)
    calibration = None
    evaluation: dict = {}
    if calib is not None:
        emb = model.embed_arrays(preprocess.normalize(calib.images))
        calibration = calibrate(emb, calib.labels, seed=args.seed, probability=args.probability,
                                forges=calib.forges)
        if calibration.impostor_pairs < SMALL_CALIBRATION:
            warn(f"calibration has only {calibration.impostor_pairs} impostor pairs: the FAR 0.1% threshold "
                 f"rests on fewer than {SMALL_CALIBRATION // 1000} false accepts; give more held-out classes "
                 f"(--calib-data) before relying on it")
        evaluation = {"on": "calibration data" if args.calib_data else "validation split",
                      **card_evaluation(emb, calib, args.eval_way, args.eval_episodes,
                                        calibration.points["eer"].distance, args.seed)}
        way = evaluation["oneshot"]["mean_way"]
        if way < args.eval_way:
            warn(f"the one-shot figure is {way:.1f}-way, not {args.eval_way}-way: the "
                 f"{evaluation['on']} holds only {evaluation['data']['classes']} classes")
        spread = distance_spread(emb)
        evaluation["distance_spread"] = spread
        chance = 1.0 / max(way, 1.0)
        if spread < COLLAPSED_SPREAD:
            warn(f"the embedding has collapsed: distances between held-out images vary by only {spread:.4f} "
                 f"(standard deviation), so thresholds cannot separate anything. Try --loss triplet or "
                 f"prototypical, a lower --lr, the default --margin, or a --preset")
        elif evaluation["oneshot"]["accuracy"] <= 1.5 * chance:
            warn(f"held-out one-shot accuracy {evaluation['oneshot']['accuracy']:.3f} is near chance "
                 f"({chance:.3f}): the model has learned little that transfers; try a --preset, more --minutes "
                 f"or a smaller --size")
    card = model.card
    card.calibration = calibration.to_dict() if calibration else None
    card.training = {
        "command": command,
        "config": config.to_dict(),
        "steps": result.steps,
        "elapsed_s": round(result.elapsed_s, 1),
        "stopped_by": result.stopped_by,
        "kept_step": result.best_step,
        "best_val_oneshot": result.best_metric,  # the validation score (history: score_name), kept name
        "val_score": result.history[-1]["score_name"] if result.history else None,
        "history": result.history,
        "device": str(trainer.device),
        "threads": torch.get_num_threads(),
        "preset": args.preset,
        "warnings": warnings,
    }
    card.data = {
        "train": train.summary,
        "validation": None if val is None else {"by": args.val_by, **val.summary},
        "calibration": calib_summary or (None if calib is None else {"source": "validation split",
                                                                      "images": len(calib)}),
    }
    card.evaluation = evaluation
    model.save(args.out, graph=args.graph)
    summary = {"model": args.out, "fingerprint": card.fingerprint, "steps": result.steps,
               "elapsed_s": round(result.elapsed_s, 1), "kept_step": result.best_step}
    if evaluation:
        o = evaluation["oneshot"]
        summary.update(evaluated_on=evaluation["on"], oneshot=round(o["accuracy"], 4),
                       oneshot_way=round(o["mean_way"], 1), pairs_accuracy=round(evaluation["pairs"]["accuracy"], 4),
                       recall_at_1=round(evaluation["recall_at_1"], 4))
        if "references" in evaluation:
            r = evaluation["references"]
            summary.update(references=r["count"], skilled_eer=r["skilled_eer"], random_eer=r["random_eer"])
    if warnings:
        summary["warnings"] = len(warnings)
    print(json.dumps(summary, indent=2))
    return 0

