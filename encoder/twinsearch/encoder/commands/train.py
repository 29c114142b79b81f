"""`twinsearch train`: train an encoder on a folder tree (or zip, or idx files) and write a model file.

The default Omniglot model was made with (see its card for the exact command):

    twinsearch train --data data/omniglot/images_background_small1.zip --class-depth 2 \\
        --calib-data data/omniglot/images_background_small2.zip \\
        --calib-groups 'Japanese_(katakana)' Sanskrit Tagalog --invert --size 32 --rotations \\
        --loss prototypical -P 60 -K 2 --groups-per-batch 2 --aug-elastic 0.03 --tta 2 --threads 2 \\
        --val-every 200 --minutes 20 --name omniglot --out omniglot.tsm

The pipeline itself is `twinsearch.encoder.training.recipe.train_model`; this command turns its flags into
a `Recipe`, shows progress, saves the model (with its ONNX graph unless --no-graph) and prints the summary.

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
from pathlib import Path

from ..errors import DataError
from ..presets import PRESETS, preset
from ._errors import device_error, output_file_error, range_error, reports_data_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="start from a measured recipe for this kind of data; flags given beside it override "
                             "it, --no-invert and the like turn off what it turns on (the card records the preset)")
    d = parser.add_argument_group("data")
    d.add_argument("--data", required=True, help="folder tree, zip of one, or idx folder (with --split)")
    d.add_argument("--class-depth", type=int, default=1,
                   help="folder depth of classes (default 1: each top folder is a class; Omniglot: 2)")
    d.add_argument("--split", choices=("train", "test"), help="idx folders: which split")
    d.add_argument("--groups", nargs="*", default=[], help="train only on these groups (class depth >= 2)")
    d.add_argument("--exclude-groups", nargs="*", default=[], help="leave these groups out of training")
    d.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the training classes held out for validation (default 0.1; 0: none, the last step "
                        "is kept, and without --calib-data the model has no calibrated thresholds)")
    d.add_argument("--forgery-suffix", default="_forg",
                   help="class folders named <class><suffix> hold skilled forgeries of <class>: never its "
                        "positives, batched beside it as negatives, used for validation and calibration "
                        "(default: _forg; '' for none)")
    d.add_argument("--split-seed", type=int, default=None, metavar="SEED",
                   help="draws the validation split (default: --seed); give it to train several seeds on one "
                        "split, to compare or combine them on the same held-out classes")
    d.add_argument("--val-max-images", type=int, default=4000, metavar="N",
                   help="validate on at most about N of the held-out images, as many from each class as fit "
                        "(default %(default)s; 0: all): every validation embeds each one with every test-time "
                        "view, which on a large data set can take longer than the training between them")
    d.add_argument("--skip-invalid", action="store_true",
                   help="leave out images that cannot be read, warning with their count and the first few, "
                        "instead of stopping at the first (default: stop)")
    d.add_argument("--val-by", choices=("classes", "images"), default="classes",
                   help="hold out whole classes (open set, default) or images of every class (closed set)")
    d.add_argument("--calib-data", help="held-out data for calibration and the card's evaluation "
                                        "(default: the validation split)")
    d.add_argument("--calib-class-depth", type=int, default=None,
                   help="folder depth of the classes of --calib-data (default: --class-depth)")
    d.add_argument("--calib-split", choices=("train", "test"), help="--calib-data as idx folders: which split")
    d.add_argument("--calib-groups", nargs="*", default=[],
                   help="calibrate only on these groups of --calib-data (class depth >= 2)")
    d.add_argument("--probability", choices=("logistic", "isotonic"), default="logistic",
                   help="calibrated distance-to-probability mapping stored in the card (default: logistic)")

    p = parser.add_argument_group("input")
    p.add_argument("--size", type=int, nargs="+", default=[56], metavar=("H", "W"),
                   help="input height and width in pixels (one number: square; default 56); signatures: 96 192")
    p.add_argument("--channels", type=int, choices=(1, 3), default=1,
                   help="1: grayscale (default), 3: RGB")
    p.add_argument("--resize", choices=("stretch", "fit", "scale"), default="stretch",
                   help="stretch to the size, fit (keep the aspect ratio, centre, pad with the background), or "
                        "scale every image by the same factor (--resize-scale; centred and padded as by fit, "
                        "so that a larger signature stays larger; images too large at that factor are fitted)")
    p.add_argument("--resize-scale", type=float, default=0.0, metavar="FACTOR",
                   help="with --resize scale: output pixels per input pixel, the same for every image; pick it "
                        "so that typical images fill about two thirds of --size. Sizes compare only between "
                        "images scanned at one resolution: enroll and query at the resolution trained on")
    p.add_argument("--invert", action=argparse.BooleanOptionalAction, default=False, help="dark ink on a light background (Omniglot)")
    p.add_argument("--background-removal", choices=("none", "otsu"), default="none",
                   help="ink on paper: pixels lighter than the image's Otsu threshold become white, the ink "
                        "keeps its grey levels (so the paper's colour says nothing)")
    p.add_argument("--binarize", default="none", metavar="otsu|LEVEL",
                   help="ink on paper: black ink on white by Otsu's threshold, or by a fixed grey level in (0, 1) "
                        "(so neither does the ink's darkness); default none")
    p.add_argument("--crop-to-ink", action=argparse.BooleanOptionalAction, default=False,
                   help="ink on paper: crop to the ink's bounding box before resizing (with --resize fit: centred)")
    p.add_argument("--mean", type=float, nargs="+", default=[0.0],
                   help="subtracted from the [0, 1] pixels: one value, or one per channel (default 0)")
    p.add_argument("--std", type=float, nargs="+", default=[1.0],
                   help="the pixels are then divided by it: one value, or one per channel (default 1)")

    m = parser.add_argument_group("model")
    m.add_argument("--backbone", choices=("conv4", "koch", "signet", "resnet"), default="conv4",
                   help="the network (default conv4: four conv blocks; resnet: a small residual net)")
    m.add_argument("--widths", type=int, nargs="+", help="conv4/resnet channel widths, e.g. 64 64 64 64")
    m.add_argument("--pool", choices=("flatten", "avg"), help="conv4: flatten (default) or average-pool")
    m.add_argument("--convs-per-block", type=int, nargs="+", metavar="N",
                   help="conv4: 3x3 convs before each pool, one number for all blocks or one per block "
                        "(default 1)")
    m.add_argument("--stem-stride", type=int, choices=(1, 2), help="resnet: stride of the first convolution "
                                                                    "(2: a quarter of the cost; default 1)")
    m.add_argument("--dim", type=int, default=128, help="embedding dimension (default 128)")
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
    m.add_argument("--orientation-weight", type=float, default=0.0, metavar="W",
                   help="append a fixed histogram of the image's gradient directions (the slant and curve of "
                        "strokes; no weights, not trained) to each embedding, taking share W of the squared "
                        "distance; the signatures preset uses 0.65. 0 (default): off")
    m.add_argument("--orientation-cells", type=int, nargs=2, default=[1, 2], metavar=("ROWS", "COLUMNS"),
                   help="the histogram's regions, one histogram each (default 1 2: left and right halves)")
    m.add_argument("--orientation-bins", type=int, default=8, metavar="N",
                   help="the histogram's directions over 180 degrees (default 8)")

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
    t.add_argument("--mining", choices=("batch_hard", "semi_hard", "all"), default="batch_hard",
                   help="triplet and contrastive losses: which negatives count (default batch_hard: the hardest "
                        "in the batch)")
    t.add_argument("--label-smoothing", type=float, default=0.0,
                   help="normsoftmax: label smoothing in [0, 1) (default 0)")
    t.add_argument("-P", "--classes-per-batch", type=int, default=64, help="classes in a batch (default 64)")
    t.add_argument("-K", "--images-per-class", type=int, default=2,
                   help="images of each class in a batch (default 2)")
    t.add_argument("--groups-per-batch", type=int, default=0,
                   help="draw each batch's classes from this many groups only (hard batches; 0: any classes); "
                        "ignored where every group is a single class (--class-depth 1)")
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of AdamW (default 0.003)")
    t.add_argument("--weight-decay", type=float, default=5e-4, help="AdamW weight decay (default 0.0005)")
    t.add_argument("--minutes", type=float, default=0.0,
                   help="time budget (wall clock) in minutes; give --minutes, --steps or both")
    t.add_argument("--steps", type=int, default=0, help="step limit; give --minutes, --steps or both")
    t.add_argument("--rotations", action=argparse.BooleanOptionalAction, default=False, help="turned copies as extra classes: three quarter turns of square inputs (characters); turned 180 degrees and mirrored both ways otherwise")
    t.add_argument("--no-augment", action="store_true", help="no random affine distortions")
    t.add_argument("--aug-rotation", type=float, default=10.0, help="degrees")
    t.add_argument("--aug-shear", type=float, default=0.3, help="radians")
    t.add_argument("--aug-scale", type=float, nargs=2, default=[0.8, 1.2], metavar=("LOW", "HIGH"),
                   help="random scaling between these factors (default 0.8 1.2)")
    t.add_argument("--aug-translate", type=float, default=0.1, help="fraction of the size")
    t.add_argument("--aug-thickness", type=float, default=0.0, help="probability of stroke dilation/erosion")
    t.add_argument("--aug-elastic", type=float, default=0.0, help="elastic distortion strength (fraction of size)")
    t.add_argument("--aug-hflip", type=float, default=0.0, help="probability of a left-right mirror")
    t.add_argument("--val-every", type=int, default=200,
                   help="steps between validations, each followed by a checkpoint (default 200; 0: validate "
                        "only at the end)")
    t.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate and keep a moving average of the weights, DECAY per step (0.99 averages about "
                        "the last 100 steps), instead of one step's weights (default 0: off)")
    t.add_argument("--seed", type=int, default=0, help="random seed of the weights and batches (default 0)")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    t.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="bf16: forward pass in bfloat16 (faster on CPUs with AVX-512 BF16 or AMX and on recent "
                        "GPUs, many times slower elsewhere, where torch emulates it); auto: bf16 where the "
                        "hardware has it, else fp32 (the presets' choice); weights, loss and the saved model "
                        "stay fp32 (default: fp32)")
    t.add_argument("--init", metavar="MODEL",
                   help="start from this model file's weights (or a shipped model's, by name) instead of random "
                        "ones: fine-tune a model trained on more data of a related kind. Its backbone, --widths, "
                        "--pool and --channels must match; the input size may differ")
    t.add_argument("--checkpoint", help="checkpoint file (default: OUT.ckpt)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint")

    o = parser.add_argument_group("output")
    o.add_argument("--out", required=True, help="model file to write")
    o.add_argument("--name", help="model name (default: the output file's name without its extension)")
    o.add_argument("--graph", action=argparse.BooleanOptionalAction, default=True,
                   help="also store the network as an ONNX graph in the model file, which the server runs with "
                        "ONNX Runtime on CPU, several times faster than PyTorch for small networks "
                        "(default: on)")
    o.add_argument("--eval-way", type=int, default=20,
                   help="the card's one-shot figure: classes per episode (default 20)")
    o.add_argument("--eval-episodes", type=int, default=400,
                   help="the card's one-shot figure: episodes (default 400)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")


# Backbone flags and the backbones that take them; the others refuse them (see `backbone_flag_error`).
BACKBONE_FLAGS = {"widths": ("conv4", "resnet"), "pool": ("conv4",), "convs_per_block": ("conv4",),
                  "stem_stride": ("resnet",)}


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv`; with --preset, the preset's settings become the defaults, so flags given win.

    A preset's backbone flags go with its backbone: given another `--backbone`, those the new backbone
    does not take are dropped (`--preset signatures --backbone resnet` leaves out the preset's conv4
    pooling), while the same flags given by hand are refused by `run`."""
    args = parser.parse_args(argv)
    if args.preset:
        given = args
        parser.set_defaults(**preset(args.preset))
        args = parser.parse_args(argv)
        for flag, backbones in BACKBONE_FLAGS.items():
            if getattr(given, flag) is None and args.backbone not in backbones:
                setattr(args, flag, None)
    return args


def backbone_flag_error(args: argparse.Namespace) -> str | None:
    """The usage message for a backbone flag that `args.backbone` does not take, or None."""
    for flag, backbones in BACKBONE_FLAGS.items():
        if getattr(args, flag) is not None and args.backbone not in backbones:
            return (f"--{flag.replace('_', '-')} applies to the {' and '.join(backbones)} backbone"
                    f"{'s' if len(backbones) > 1 else ''}, not {args.backbone}")
    return None


def _config(args: argparse.Namespace):
    from ..heads import shift_views
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
    return TrainConfig(
        backbone=args.backbone, backbone_args=backbone_args, dim=args.dim,
        head_args={"dropout": args.dropout} if args.dropout else {},
        tta_shifts=shift_views(args.tta), tta_flip=args.tta_flip,
        posterior_weight=args.posterior_weight, orientation_weight=args.orientation_weight,
        orientation_cells=list(args.orientation_cells), orientation_bins=args.orientation_bins,
        loss=args.loss, margin=args.margin, scale=args.scale, mining=args.mining, label_smoothing=args.label_smoothing,
        classes_per_batch=args.classes_per_batch, images_per_class=args.images_per_class,
        groups_per_batch=args.groups_per_batch, lr=args.lr, weight_decay=args.weight_decay, steps=args.steps,
        minutes=args.minutes, rotations=args.rotations, augment=augment, val_every=args.val_every,
        seed=args.seed, threads=args.threads, precision=args.precision, ema=args.ema)


@reports_data_errors("train")
def run(args: argparse.Namespace) -> int:
    from ..preprocess import Preprocess
    from ..training.recipe import Recipe, train_model
    from ..training.trainer import TrainingInterrupted, TrainingOutOfMemory, is_out_of_memory

    if len(args.size) > 2:
        return _usage("--size takes one number (square) or two (height width)")
    for message in (_value_error(args), device_error(args.device),
                    output_file_error("--out", args.out, "model.tsm"),
                    output_file_error("--checkpoint", args.checkpoint, "model.tsm.ckpt")):
        if message is not None:
            return _usage(message)
    if args.val_max_images < 0:
        return _usage(f"--val-max-images takes a count of images, or 0 for all of them, got {args.val_max_images}")
    if (message := backbone_flag_error(args)) is not None:
        return _usage(message)
    if args.orientation_weight:  # 0: off
        from ..heads import OrientationHistogram

        try:
            OrientationHistogram.check(args.orientation_weight, args.orientation_cells, args.orientation_bins)
        except ValueError as exc:
            return _usage(f"--orientation-weight, --orientation-cells, --orientation-bins: {exc}")
    try:
        binarize = args.binarize if args.binarize in ("none", "otsu") else float(args.binarize)
    except ValueError:
        return _usage(f"--binarize takes none, otsu or a grey level in (0, 1), got {args.binarize!r}")
    if (args.resize == "scale") != (args.resize_scale > 0):
        return _usage("--resize scale takes a positive --resize-scale FACTOR, and --resize-scale only goes with it")
    height, width = args.size[0], args.size[-1]
    try:
        preprocess = Preprocess(width=width, height=height, channels=args.channels, resize=args.resize,
                                invert=args.invert, mean=tuple(args.mean), std=tuple(args.std),
                                background_removal=args.background_removal, binarize=binarize,
                                crop_to_ink=args.crop_to_ink, resize_scale=args.resize_scale)
    except ValueError as exc:
        return _usage(str(exc))
    recipe = Recipe(
        data=args.data, preprocess=preprocess, config=_config(args), class_depth=args.class_depth,
        name=args.name or Path(args.out).stem, split=args.split, groups=args.groups,
        exclude_groups=args.exclude_groups, forgery_suffix=args.forgery_suffix or None,
        val_fraction=args.val_fraction, val_max_images=args.val_max_images, val_by=args.val_by,
        split_seed=args.split_seed, calib_data=args.calib_data,
        calib_class_depth=args.calib_class_depth, calib_split=args.calib_split, calib_groups=args.calib_groups,
        probability=args.probability, eval_way=args.eval_way, eval_episodes=args.eval_episodes,
        device=args.device, checkpoint=args.checkpoint or f"{args.out}.ckpt", resume=args.resume,
        preset=args.preset, command="twinsearch " + shlex.join(sys.argv[1:]), init=args.init,
        skip_invalid=args.skip_invalid)
    with _Progress(disabled=args.no_progress) as progress:
        try:
            outcome = train_model(recipe, events=progress)
        except TrainingInterrupted as stop:
            progress.close()
            # The model file is written only at the end: say so, and how to get the model kept so far.
            if stop.checkpoint:
                keep = (f"; with --resume --steps {stop.step} it writes the model kept so far without training more"
                        if stop.step else "")
                print(f"twinsearch train: interrupted after step {stop.step}; checkpoint saved to {stop.checkpoint}: "
                      f"the same command with --resume continues from it{keep}. No model written to {args.out}",
                      file=sys.stderr)
            else:
                print(f"twinsearch train: interrupted after step {stop.step}; no model written to {args.out}",
                      file=sys.stderr)
            return 130
        except TrainingOutOfMemory as oom:
            progress.close()
            print(f"twinsearch train: {_out_of_memory_message(oom)}. No model written to {args.out}",
                  file=sys.stderr)
            return 2
        except DataError:
            raise  # reports_data_errors words it, with a class-depth hint where one helps
        except (FileNotFoundError, ValueError) as exc:  # settings the trainer refused; a checkpoint to resume
            progress.close()
            return _usage(str(exc))
        except RuntimeError as exc:  # after the steps: calibrating and evaluating the trained model
            if not is_out_of_memory(exc):
                raise
            progress.close()
            kept = Path(recipe.checkpoint)
            weights = f"; the trained weights are kept in the checkpoint {kept}" if kept.exists() else ""
            print(f"twinsearch train: out of memory after training, while calibrating and evaluating the model at "
                  f"{height} x {width} (a smaller --size needs less){weights}. No model written to {args.out}",
                  file=sys.stderr)
            return 2
    try:
        outcome.model.save(args.out, graph=args.graph)
    except RuntimeError as exc:  # exporting the ONNX graph traces the network once more
        if not is_out_of_memory(exc):
            raise
        print(f"twinsearch train: out of memory writing the model at {height} x {width}"
              f"{' with its ONNX graph; --no-graph writes it without' if args.graph else ''}. No model written to "
              f"{args.out}", file=sys.stderr)
        return 2
    print(json.dumps({"model": args.out, **outcome.summary()}, indent=2))
    return 0


# Flags whose values must lie in a range (`range_error`): (flag, attribute, lowest, highest).
_RANGES = (
    ("--minutes", "minutes", [0], None), ("--steps", "steps", [0], None), ("--threads", "threads", [0], None),
    ("--dim", "dim", [1], None), ("--classes-per-batch (-P)", "classes_per_batch", [2], None),
    ("--images-per-class (-K)", "images_per_class", [1], None), ("--groups-per-batch", "groups_per_batch", [0], None),
    ("--val-fraction", "val_fraction", [0], 1), ("--val-every", "val_every", [0], None),
    ("--eval-way", "eval_way", [2], None), ("--eval-episodes", "eval_episodes", [1], None), ("--tta", "tta", [0], None),
    ("--dropout", "dropout", [0], 1), ("--label-smoothing", "label_smoothing", [0], 1), ("--lr", "lr", 0, None),
    ("--weight-decay", "weight_decay", [0], None), ("--margin", "margin", [0], None), ("--scale", "scale", 0, None),
    ("--aug-rotation", "aug_rotation", [0], None), ("--aug-shear", "aug_shear", [0], None),
    ("--aug-translate", "aug_translate", [0], 1), ("--aug-thickness", "aug_thickness", [0], [1]),
    ("--aug-elastic", "aug_elastic", [0], None), ("--aug-hflip", "aug_hflip", [0], [1]), ("--ema", "ema", [0], 1),
    ("--posterior-weight", "posterior_weight", [0], [1]), ("--seed", "seed", [0], None),
    ("--split-seed", "split_seed", [0], None), ("--class-depth", "class_depth", [1], None),
    ("--calib-class-depth", "calib_class_depth", [1], None),
)


def _value_error(args: argparse.Namespace) -> str | None:
    """The usage message for a flag whose value is out of its range, or None. Checked before anything is
    decoded: a value that training would take (a negative budget, a 0-dimensional embedding) or refuse
    only deep inside it."""
    message = range_error(args, _RANGES)
    if message is not None:
        return message
    lo, hi = args.aug_scale
    if not 0 < lo <= hi:
        return f"--aug-scale takes the smallest and the largest factor, 0 < LOW <= HIGH, got {lo} {hi}"
    if any(s <= 0 for s in args.size):
        return f"--size takes positive pixel counts, got {' '.join(map(str, args.size))}"
    return None


def _out_of_memory_message(oom) -> str:
    """What ran out of memory (a TrainingOutOfMemory), at what size, and the flags that make it smaller."""
    where = "memory" if oom.device.type == "cpu" else f"the memory of {oom.device}"
    size = f"{oom.images} images at {oom.height} x {oom.width}"
    if oom.stage == "validation":
        # Validation embeds up to EMBED_BATCH images at a time, whatever the training batch.
        return (f"out of memory: validation after step {oom.step} embeds {size} at a time, more than fits in "
                f"{where}; use a smaller --size, or a --val-max-images below {oom.images}")
    return (f"out of memory: training step {oom.step}, a batch of {size}, needs more than fits in {where}; "
            "use a smaller --size, or fewer images a batch (-P/--classes-per-batch, -K/--images-per-class)")


def _usage(text: str) -> int:
    print(f"twinsearch train: {text}", file=sys.stderr)
    return 2


class _Progress:
    """The terminal side of `train_model`'s events: a decoding bar, a training bar (per mille of the budget)
    with the latest loss and validation score, the speed line and warnings on stderr."""

    def __init__(self, disabled: bool):
        self.disabled = disabled
        self._decoding = None
        self._training = None
        self._status: dict = {}

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for bar in (self._decoding, self._training):
            if bar is not None:
                bar.close()
        self._decoding = self._training = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event["kind"]
        if kind == "decode":
            if self._decoding is None:
                self._decoding = tqdm(total=event["total"], desc="decoding", unit="img", disable=self.disabled,
                                      leave=False)
            self._decoding.update(event["done"] - self._decoding.n)
            return
        if kind in ("warning", "speed"):
            prefix = "warning: " if kind == "warning" else ""
            tqdm.write(f"twinsearch train: {prefix}{event['text']}", file=sys.stderr)
            return
        if self._decoding is not None:
            self._decoding.close()
            self._decoding = None
        if self._training is None:
            self._training = tqdm(total=1000, desc="training", unit="‰", disable=self.disabled,
                                  bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        bar, status = self._training, self._status
        if kind == "stage":
            bar.set_postfix({**status, "now": event["text"]})
            return
        if kind == "step":
            bar.update(int(event["progress"] * 1000) - bar.n)
            status.update(step=event["step"], loss=f"{event['loss']:.3f}", lr=f"{event['lr']:.2e}")
        else:
            status.update(val=f"{event['score']:.3f}", best=f"{event['best']:.3f}",
                          r1=f"{event['val_recall_at_1']:.3f}")
        if kind == "val" or event["step"] % 10 == 0:
            bar.set_postfix(status, refresh=False)
