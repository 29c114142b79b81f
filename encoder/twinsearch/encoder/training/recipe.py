"""The whole training pipeline in one call: labelled data in; a trained, calibrated, evaluated model out.

    from twinsearch.encoder.preprocess import Preprocess
    from twinsearch.encoder.training import TrainConfig
    from twinsearch.encoder.training.recipe import Recipe, train_model

    recipe = Recipe(data="writers/", name="signatures", preprocess=Preprocess(height=96, width=192, ...),
                    config=TrainConfig(loss="prototypical", minutes=20))
    outcome = train_model(recipe)          # outcome.model: its card holds calibration and evaluation
    outcome.model.save("signatures.tsm", graph=True)
    print(outcome.summary(), outcome.warnings)

What it does, in order: open the data (forgery folders too), decode it with the model's `Preprocess`,
hold out validation classes (or images), train with `Trainer` (keeping the best validated step),
calibrate thresholds on the calibration data (else the validation split; skilled forgeries when there
are any), evaluate the card's figures, and warn where the result cannot be trusted: a budget that allows
too few steps, a collapsed embedding, held-out accuracy near chance, a fewer-way figure than asked, too
few impostor pairs for FAR 0.1%. `twinsearch train` is this function behind flags and a progress bar.

Progress and messages go to `events(event)` when given, as dicts with a "kind":
"decode" (done, total), "step" and "val" (the `Trainer`'s events), "speed" (text) and "warning" (text).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import capped_per_class, decode_parts, item_indices, load_arrays, open_source
from ..errors import DataError
from ..heads import build_net
from ..model import EncoderModel, read_weights
from ..preprocess import Preprocess
from .config import TrainConfig
from .trainer import Trainer, TrainResult, architecture_for, distance_spread, native_bf16, start_from

# The early speed report times the steps after the first SPEED_FROM_STEP (which hold the warm-up), until
# SPEED_STEPS of them or SPEED_SECONDS have passed (slow steps are reported early, not after the budget);
# fewer steps than FEW_STEPS in the budget earn a warning.
SPEED_FROM_STEP = 2
SPEED_STEPS = 20
SPEED_SECONDS = 30.0
FEW_STEPS = 300
# Below this standard deviation of held-out distances the embedding counts as collapsed.
COLLAPSED_SPREAD = 0.01
# Losses the collapse warning suggests, less the one that collapsed (batch-hard triplet loss can shrink
# the whole embedding and still rank: the shrinking is the failure).
COLLAPSE_REMEDY_LOSSES = ("prototypical", "triplet")
# References per class for the card's reference-based figures (at most; fewer where classes are small).
CARD_REFERENCES = 5
# Validation images kept at most: validation and calibration embed each one with every test-time view, and
# on a large data set (Fashion-MNIST's 60,000: 12,000 images in two held-out classes) that took more time
# than a short budget's training. The project's recipes hold fewer (at most about 3,000).
VAL_MAX_IMAGES = 4000
# Impostor pairs below which the FAR 0.1% threshold rests on fewer than 10 false accepts.
SMALL_CALIBRATION = 10_000

Events = Callable[[dict], None]


class CannotResume(ValueError):
    """`resume` was asked for and the checkpoint is missing or does not fit this recipe."""


@dataclass
class Recipe:
    """One training run: the data, its preprocessing, the hyper-parameters and what to hold out.

    data: folder tree, zip of one, or idx folder (`split`); `class_depth`: folder depth of classes;
    `groups` / `exclude_groups`: train on these groups only / leave them out. `forgery_suffix`: class
    folders named <class><suffix> hold skilled forgeries of <class> (None: no forgeries).
    val_fraction, val_by: the validation split, whole classes ("classes", open set) or a fraction of each
    class's images ("images", closed set); 0 keeps the last step. val_max_images: at most about this many
    validation images, as many from each class as fit (`capped_per_class`; 0: no limit), since every
    validation embeds all of them with the test-time views. split_seed draws that split (default:
    the training seed), so that runs of several seeds can share one validation split. calib_*: separate
    held-out data for calibration and the card's evaluation (default: the validation split).
    probability: the card's distance-to-probability mapping ("logistic" or "isotonic"). eval_way,
    eval_episodes: the card's one-shot figure. checkpoint, resume: where the trainer keeps its
    checkpoint, and whether to go on from it. preset, command: recorded in the card. init: a model file
    (or shipped model name) whose weights training starts from, such as a model trained on more data of
    a related kind; its name and fingerprint go into the card.
    """

    data: str | os.PathLike
    preprocess: Preprocess
    config: TrainConfig
    name: str
    class_depth: int = 1
    split: str | None = None
    groups: Sequence[str] = ()
    exclude_groups: Sequence[str] = ()
    forgery_suffix: str | None = "_forg"
    val_fraction: float = 0.1
    val_by: str = "classes"
    val_max_images: int = VAL_MAX_IMAGES
    split_seed: int | None = None
    calib_data: str | os.PathLike | None = None
    calib_class_depth: int | None = None
    calib_split: str | None = None
    calib_groups: Sequence[str] = ()
    probability: str = "logistic"
    eval_way: int = 20
    eval_episodes: int = 400
    device: str | None = None
    checkpoint: str | os.PathLike | None = None
    resume: bool = False
    preset: str | None = None
    command: str | None = None
    init: str | os.PathLike | None = None
    skip_invalid: bool = False  # leave out images that cannot be read (warned, counted) instead of stopping


@dataclass
class Outcome:
    """What `train_model` gives: the model (card filled in), the trainer's result, the warnings raised."""

    model: EncoderModel
    result: TrainResult
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """The figures `twinsearch train` prints: steps, time, kept step and the card's evaluation."""
        card, result = self.model.card, self.result
        out = {"fingerprint": card.fingerprint, "steps": result.steps, "elapsed_s": round(result.elapsed_s, 1),
               "kept_step": result.best_step}
        evaluation = card.evaluation or {}
        if evaluation:
            o = evaluation["oneshot"]
            out.update(evaluated_on=evaluation["on"], oneshot=round(o["accuracy"], 4),
                       oneshot_way=round(o["mean_way"], 1), pairs_accuracy=round(evaluation["pairs"]["accuracy"], 4),
                       recall_at_1=round(evaluation["recall_at_1"], 4))
            if "references" in evaluation:
                r = evaluation["references"]
                out.update(references=r["count"], skilled_eer=r["skilled_eer"], random_eer=r["random_eer"])
        if self.warnings:
            out["warnings"] = len(self.warnings)
        return out


def card_evaluation(emb, data, way: int, episodes: int, threshold: float, seed: int) -> dict:
    """The card's evaluation of held-out `data` (ImageArrays) embedded as `emb`: one-shot, pairs and retrieval
    over the genuine classes; with forgeries, also the reference-based figures (up to 5 references)."""
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


class _Run:
    """One call of `train_model`: its events and warnings."""

    def __init__(self, recipe: Recipe, events: Events | None):
        self.recipe = recipe
        self._events = events
        self.warnings: list[str] = []
        self._speed_from: float | None = None
        self._speed_images = self._speed_steps = 0
        self._speed_reported = False
        self.bf16_would_help = False  # the device has bfloat16 in hardware and the training runs in fp32

    def emit(self, event: dict) -> None:
        if self._events is not None:
            self._events(event)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.emit({"kind": "warning", "text": text})

    def speed(self, step: int, images: int) -> None:
        """After the first steps: steps per second, and what the budget allows at that pace. `images`: the
        size of step `step`'s batch."""
        if step == SPEED_FROM_STEP:
            self._speed_from, self._speed_images, self._speed_steps = time.monotonic(), 0, 0
            return
        if self._speed_from is None or self._speed_reported:
            return
        self._speed_images += images
        self._speed_steps += 1
        seconds = max(time.monotonic() - self._speed_from, 1e-9)
        if self._speed_steps < SPEED_STEPS and (self._speed_steps < 2 or seconds < SPEED_SECONDS):
            return
        config = self.recipe.config
        rate = self._speed_steps / seconds
        self._speed_reported = True
        text = f"{rate:.2f} steps/s (about {self._speed_images / seconds:.0f} images/s)"
        if config.minutes:
            allowed = int(rate * 60.0 * config.minutes)
            text += f"; the {config.minutes:g}-minute budget allows about {allowed} steps"
            if allowed < FEW_STEPS and (not config.steps or config.steps > allowed):
                bf16 = ", --precision bf16" if self.bf16_would_help else ""
                self.warn(f"at {rate:.2f} steps/s the budget allows only about {allowed} steps, too few for this "
                          f"size and backbone to learn much: try a smaller --size{bf16}, a lighter --backbone, "
                          f"or more --minutes")
        self.emit({"kind": "speed", "text": text})


def split_seed(recipe: Recipe) -> int:
    """The seed that draws the validation split: `split_seed`, else the training seed."""
    return recipe.config.seed if recipe.split_seed is None else int(recipe.split_seed)


def _available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux's MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            line = next((line for line in f if line.startswith("MemAvailable:")), None)
        return None if line is None else int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # not Linux, or a line not as expected: unknown
        return None


def _decoded_bytes(images: int, preprocess: Preprocess) -> int:
    """The memory of `images` decoded images (float32)."""
    return images * int(np.prod(preprocess.shape)) * 4


def _decoding_memory_warning(images: int, preprocess: Preprocess, available: int | None) -> str | None:
    """A warning when `images` decoded images (float32) will not fit in `available` bytes."""
    need = _decoded_bytes(images, preprocess)
    if available is None or need <= 0.9 * available:
        return None
    shape = " x ".join(str(v) for v in preprocess.shape)
    return (f"decoding {images:,} images at {shape} (float32) needs about {need / 2**30:.1f} GiB of memory, "
            f"and {available / 2**30:.1f} GiB is available: the system may stop the run. Use a smaller --size, "
            f"train on fewer images, or free memory (another training beside it?)")


# A training step's forward and backward pass hold about this many times the first convolution's output
# (float32): 4.9 to 5.3 measured for conv4 at 56 x 56 to 192 x 384 (peak resident memory of one step).
STEP_MEMORY_FACTOR = 6


def _step_memory_warning(net: torch.nn.Module, preprocess: Preprocess, batch: int, decoded: int,
                         available: int | None) -> str | None:
    """A warning when a training step of `batch` images will not fit beside `decoded` bytes of decoded images
    in `available` bytes: a rough estimate from the first convolution's output, which the largest inputs
    (a --size of thousands) make many gigabytes."""
    conv = next((m for m in net.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None or available is None:
        return None
    _, height, width = preprocess.shape
    first = batch * conv.out_channels * (height // conv.stride[0]) * (width // conv.stride[1]) * 4
    need = STEP_MEMORY_FACTOR * first
    if decoded + need <= 0.9 * available:
        return None
    return (f"a training step of {batch} images at {height} x {width} needs about {need / 2**30:.1f} GiB for the "
            f"network's activations, beside {decoded / 2**30:.1f} GiB of decoded images, and "
            f"{available / 2**30:.1f} GiB is available: the system may stop the run. Use a smaller --size, or "
            "fewer images a batch (-P, -K)")


def _split(recipe: Recipe, everything):
    """(train, validation) ImageArrays: whole classes held out (open set) or a fraction of every class's
    images (closed set); no validation when val_fraction is 0."""
    if recipe.val_fraction <= 0:
        return everything, None
    seed = split_seed(recipe)
    if recipe.val_by == "classes":
        train, val = everything.split_genuine_classes(recipe.val_fraction, seed)
        keep = capped_per_class(val.labels, recipe.val_max_images, seed)
        return train, val if keep.all() else val.subset_images(keep)
    mask = np.random.default_rng(seed).random(len(everything)) < recipe.val_fraction
    held = np.flatnonzero(mask)
    # Past the cap, held-out images go back to training: they are of the training classes anyway.
    mask[held[~capped_per_class(everything.labels[held], recipe.val_max_images, seed)]] = False
    return everything.subset_images(~mask), everything.subset_images(mask)


def train_model(recipe: Recipe, events: Events | None = None) -> Outcome:
    """Run `recipe` (module docstring). Raises ValueError for settings or data that cannot train (a
    message for the user), FileNotFoundError when `resume` finds no checkpoint, TrainingOutOfMemory when a
    training step or validation does not fit in the device's memory, and the data errors of `open_source`."""
    from ..evaluation import calibrate

    run = _Run(recipe, events)
    config = recipe.config
    if not config.minutes and not config.steps:
        raise ValueError("give a time budget (--minutes), a step limit (--steps) or both")
    if config.posterior_weight and (config.loss != "normsoftmax" or recipe.val_by != "images"
                                    or recipe.val_fraction <= 0):
        raise ValueError("--posterior-weight needs --loss normsoftmax and validation images of the training "
                         "classes (--val-by images, --val-fraction > 0)")
    if config.threads:
        torch.set_num_threads(config.threads)
    preprocess = recipe.preprocess
    init_card, init_weights = (None, None) if recipe.init is None else read_weights(recipe.init)
    # A backbone that cannot take the input, or initial weights that do not fit, are told before the data
    # is decoded, not after.
    net = build_net(architecture_for(config, preprocess))
    if init_weights is not None:
        start_from(net, init_weights)
    source = open_source(recipe.data, recipe.class_depth, recipe.split, forgery_suffix=recipe.forgery_suffix or None)
    if recipe.groups or recipe.exclude_groups:
        source = source.select_groups(list(recipe.groups), list(recipe.exclude_groups))
    # The split is drawn on the labels; each part's images are then decoded straight into it.
    train, val = _split(recipe, item_indices(source))
    classes = len(np.unique(train.labels[train.forgery_of_images() < 0]))
    if classes < 2:  # a metric learns by telling classes apart: one class leaves the network untrained
        raise DataError(f"training needs at least 2 classes to tell apart, and {source.description} holds "
                        f"{classes} (check --class-depth and --groups)")
    parts = [train] if val is None else [train, val]
    available = _available_memory()
    images = sum(len(p) for p in parts)
    memory = _decoding_memory_warning(images, preprocess, available)
    if memory:
        run.warn(memory)
    step = _step_memory_warning(net, preprocess, config.classes_per_batch * config.images_per_class,
                                _decoded_bytes(images, preprocess), available)
    if step:
        run.warn(step)
    skipped: list[tuple[str, str]] | None = [] if recipe.skip_invalid else None
    train, *rest = decode_parts(source, preprocess, parts,
                                progress=lambda done, n: run.emit({"kind": "decode", "done": done, "total": n}),
                                skipped=skipped)
    val = rest[0] if rest else None

    calib, calib_summary = val, None
    if recipe.calib_data:
        depth = recipe.calib_class_depth or recipe.class_depth
        try:
            csrc = open_source(recipe.calib_data, depth, recipe.calib_split,
                               forgery_suffix=recipe.forgery_suffix or None)
            if recipe.calib_groups:
                csrc = csrc.select_groups(list(recipe.calib_groups))
        except DataError as exc:
            raise DataError(f"--calib-data {recipe.calib_data}, read at class depth {depth} "
                            f"(--calib-class-depth, default --class-depth): {exc}") from exc
        calib, calib_summary = load_arrays(csrc, preprocess, skipped=skipped), csrc.summary()
    elif recipe.calib_groups:
        run.warn("--calib-groups is ignored without --calib-data")
    if skipped:
        shown = "; ".join(f"{path}: {reason}" for path, reason in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        run.warn(f"{len(skipped)} unreadable images left out (--skip-invalid): {shown}{more}")
    if calib is None:
        run.warn("no validation split (--val-fraction 0) and no --calib-data: the model will have no calibrated "
                 "thresholds, so the server can decide only with a threshold given by the request or the "
                 "gallery; give --calib-data with classes the model does not train on")
    else:
        shortfall = calibration_shortfall(calib.labels)
        if shortfall:  # told now, not after the whole training
            where = f"--calib-data {recipe.calib_data}" if recipe.calib_data else "the validation split"
            raise ValueError(f"{where} cannot calibrate the model: {shortfall}")

    def on_event(event: dict) -> None:
        if event["kind"] == "step":
            run.speed(event["step"], event["images"])
        run.emit(event)

    trainer = Trainer(config, preprocess, train, val, device=recipe.device,
                      checkpoint=None if recipe.checkpoint is None else str(recipe.checkpoint), callback=on_event,
                      init_weights=init_weights)
    native = native_bf16(trainer.device)
    run.bf16_would_help = native and trainer.precision == "fp32"
    if trainer.precision == "bf16" and not native:
        run.warn(f"--precision bf16, but this {'CPU' if trainer.device.type == 'cpu' else 'device'} has no bfloat16 "
                 "in hardware (on a CPU: AVX-512 BF16 or AMX): torch emulates it, and each step takes many times as "
                 "long as in fp32. Use --precision auto (bf16 only where the hardware has it) or fp32")
    try:
        result = trainer.fit(resume=recipe.resume)
    except (FileNotFoundError, ValueError) as exc:
        if recipe.resume:
            raise CannotResume(f"cannot resume: {exc}") from exc
        raise

    model = EncoderModel.create(result.net, result.architecture, preprocess, recipe.name)
    calibration, evaluation = None, {}
    if calib is not None:
        run.emit({"kind": "stage", "text": f"calibrating and evaluating on {len(calib)} held-out images"})
        calibration, evaluation = _calibrate_and_evaluate(run, model, calib, calibrate,
                                                          "calibration data" if recipe.calib_data else
                                                          "validation split")
    card = model.card
    card.calibration = calibration.to_dict() if calibration else None
    card.training = {
        "command": recipe.command,
        "config": config.to_dict(),
        "steps": result.steps,
        "elapsed_s": round(result.elapsed_s, 1),
        "stopped_by": result.stopped_by,
        "kept_step": result.best_step,
        "best_val_oneshot": result.best_metric,  # the validation score (history: score_name), kept name
        "val_score": result.history[-1]["score_name"] if result.history else None,
        "history": result.history,
        "device": str(trainer.device),
        "precision": trainer.precision,  # what "auto" became on this device
        "threads": torch.get_num_threads(),
        "preset": recipe.preset,
        "init": None if init_card is None else {"model": str(recipe.init), "name": init_card.name,
                                                "fingerprint": init_card.fingerprint},
        "warnings": run.warnings,
    }
    card.data = {
        "train": train.summary,
        "validation": None if val is None else {"by": recipe.val_by, "split_seed": split_seed(recipe),
                                                "max_images": recipe.val_max_images, **val.summary},
        "calibration": calib_summary or (None if calib is None else {"source": "validation split",
                                                                      "images": len(calib)}),
    }
    card.evaluation = evaluation
    return Outcome(model, result, run.warnings)


def calibration_shortfall(labels: np.ndarray) -> str | None:
    """What held-out images with these class labels lack for calibration (at least two same-class and two
    different-class pairs), or None."""
    counts = np.bincount(np.unique(np.asarray(labels), return_inverse=True)[1]) if len(labels) else np.zeros(0)
    counts = counts.astype(np.int64)
    genuine = int((counts * (counts - 1) // 2).sum())
    impostor = int((counts.sum() ** 2 - (counts ** 2).sum()) // 2)
    if genuine >= 2 and impostor >= 2:
        return None
    return (f"its {int(counts.sum())} images in {len(counts)} classes give {genuine} same-class and {impostor} "
            "different-class pairs, and calibration needs at least 2 of each: give it more classes, with at least "
            "two images each")


def _calibrate_and_evaluate(run: _Run, model: EncoderModel, calib, calibrate, on: str):
    """Thresholds from the held-out data, the card's evaluation, and the warnings they call for."""
    recipe = run.recipe
    seed = split_seed(recipe)
    emb = model.embed_arrays(model.preprocess.normalize(calib.images))
    calibration = calibrate(emb, calib.labels, seed=seed, probability=recipe.probability, forges=calib.forges)
    if calibration.impostor_pairs < SMALL_CALIBRATION:
        run.warn(f"calibration has only {calibration.impostor_pairs} impostor pairs: the FAR 0.1% threshold "
                 f"rests on fewer than {SMALL_CALIBRATION // 1000} false accepts; give more held-out classes "
                 f"(--calib-data) before relying on it")
    evaluation = {"on": on, **card_evaluation(emb, calib, recipe.eval_way, recipe.eval_episodes,
                                              calibration.points["eer"].distance, seed)}
    way = evaluation["oneshot"]["mean_way"]
    if way < recipe.eval_way:
        # An episode draws classes with a support and a query image: a class of one image is never drawn.
        counts = np.bincount(calib.labels[calib.forgery_of_images() < 0])
        classes, drawn = int((counts > 0).sum()), int((counts >= 2).sum())
        some = f", {drawn} of them with 2 or more images" if drawn < classes else ""
        run.warn(f"the one-shot figure is {way:.1f}-way, not {recipe.eval_way}-way: the {on} holds only "
                 f"{classes} classes{some}")
    spread = distance_spread(model.net.learned_part(emb))  # an orientation histogram's spread is not learned
    evaluation["distance_spread"] = spread
    chance = 1.0 / max(way, 1.0)
    if spread < COLLAPSED_SPREAD:
        others = " or ".join(loss for loss in COLLAPSE_REMEDY_LOSSES if loss != recipe.config.loss)
        remedies = [f"--loss {others}", "a lower --lr"]
        if recipe.config.margin is not None:
            remedies.append("the loss's default --margin")
        if not recipe.preset:
            remedies.append("a --preset")
        run.warn(f"the embedding has collapsed: distances between held-out images vary by only {spread:.4f} "
                 f"(standard deviation), so its thresholds are tiny distances that separate little. Try "
                 f"{', '.join(remedies[:-1])} or {remedies[-1]}")
    elif evaluation["oneshot"]["accuracy"] <= 1.5 * chance:
        remedies = ["more --minutes", "a smaller --size"] if recipe.preset else ["a --preset", "more --minutes",
                                                                                  "a smaller --size"]
        run.warn(f"held-out one-shot accuracy {evaluation['oneshot']['accuracy']:.3f} is near chance "
                 f"({chance:.3f}): the model has learned little that transfers; try {', '.join(remedies[:-1])} "
                 f"or {remedies[-1]}")
    return calibration, evaluation
