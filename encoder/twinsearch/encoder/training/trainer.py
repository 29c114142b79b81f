"""The training loop: seeded, AdamW with warm-up and cosine decay, a time budget, validation on held-out
classes, the best checkpoint kept, resumable from a checkpoint file, a GPU when present.

Progress is reported through a callback (the command layer draws the progress bar); the library logs.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..augment import RandomAffine, expand_rotations
from ..data import ImageArrays
from ..evaluation import oneshot_accuracy, retrieval
from ..evaluation.references import reference_report, references_allowed
from ..heads import ClassPosterior, EmbeddingNet, build_net
from ..losses import BaseMetricLoss, ContrastiveLoss, NormSoftmaxLoss, PrototypicalLoss, TripletLoss
from ..preprocess import Preprocess
from ..samplers import PairBatchSampler, PKSampler
from .config import TrainConfig

log = logging.getLogger(__name__)

LOSSES = ("normsoftmax", "prototypical", "triplet", "contrastive", "contrastive-pairs")
PRECISIONS = ("fp32", "bf16", "auto")
# References per class for the skilled-forgery validation metric (as a signature user enrolls them).
VAL_REFERENCES = 5
# Draws of those references averaged for the metric: with a few validation writers one draw moves the EER
# by several points, enough to pick a checkpoint by luck.
VAL_REFERENCE_DRAWS = 5
# Images embedded at a time by validation.
EMBED_BATCH = 512
# What torch says when an allocation cannot be satisfied and it raises a plain RuntimeError: the CPU
# allocator and Apple's MPS backend (on CUDA it raises torch.OutOfMemoryError).
OUT_OF_MEMORY_MESSAGES = ("DefaultCPUAllocator: can't allocate memory", "MPS backend out of memory")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (SIGINT) after a whole step; `checkpoint` holds that step (None when the
    trainer writes none), from which `fit(resume=True)` continues."""

    def __init__(self, step: int, checkpoint: str | None):
        super().__init__(f"interrupted after step {step}")
        self.step = step
        self.checkpoint = checkpoint


class TrainingOutOfMemory(MemoryError):
    """A training step or a validation needed more memory than the device has. `stage`: "training step" or
    "validation"; `step`: the step that failed (training) or after which validation ran; `images`: the
    images it held at once; `height`, `width`: their size in pixels; `device`: where it ran."""

    def __init__(self, stage: str, step: int, images: int, height: int, width: int, device: torch.device):
        super().__init__(f"{stage} at step {step} ran out of memory on {device}: {images} images at "
                         f"{height} x {width}")
        self.stage = stage
        self.step = step
        self.images = images
        self.height = height
        self.width = width
        self.device = device


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether torch raised `exc` because an allocation could not be satisfied (any other RuntimeError is a
    bug or a misfit, not a matter of size)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and any(text in str(exc) for text in OUT_OF_MEMORY_MESSAGES))


@contextlib.contextmanager
def _out_of_memory_as(stage: str, step: int, images: int, preprocess: Preprocess,
                      device: torch.device) -> Iterator[None]:
    """Inside, torch's out-of-memory error becomes a TrainingOutOfMemory that says what did not fit; other
    errors pass as they are."""
    try:
        yield
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        raise TrainingOutOfMemory(stage, step, images, preprocess.height, preprocess.width, device) from exc


@contextlib.contextmanager
def _stop_requests(on_first: Callable[[], None]) -> Iterator[threading.Event]:
    """While inside, the first Ctrl-C (SIGINT) sets the event yielded instead of raising, so that the loop
    can stop between steps and save them; a second one raises KeyboardInterrupt at once. Only the main
    thread receives signals: elsewhere the event never fires and Ctrl-C keeps its usual effect; a process
    that ignores SIGINT keeps ignoring it."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield requested  # elsewhere signals do not arrive; an ignored SIGINT (a background job) stays ignored
        return

    def handler(signum, frame) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        on_first()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class TrainResult:
    net: EmbeddingNet
    architecture: dict
    steps: int
    elapsed_s: float
    best_step: int
    best_metric: float | None
    history: list[dict] = field(default_factory=list)
    stopped_by: str = ""


def architecture_for(config: TrainConfig, preprocess: Preprocess) -> dict:
    """The card's architecture dict: backbone arguments completed from the input specification."""
    args = dict(config.backbone_args)
    args.setdefault("in_channels", preprocess.channels)
    args.setdefault("input_size", preprocess.height)
    if config.backbone == "signet" or (config.backbone in ("conv4", "koch") and preprocess.width != preprocess.height):
        args.setdefault("input_width", preprocess.width)
    arch = {"backbone": config.backbone, "backbone_args": args, "dim": config.dim, "head_args": dict(config.head_args)}
    if config.tta_shifts:
        arch["tta_shifts"] = [list(s) for s in config.tta_shifts]
    if config.tta_flip:
        arch["tta_flip"] = True
    if config.orientation_weight:
        arch["orientations"] = {"weight": config.orientation_weight, "cells": list(config.orientation_cells),
                                "bins": config.orientation_bins}
    return arch


def build_loss(config: TrainConfig, num_classes: int) -> BaseMetricLoss:
    """The configured loss. A margin or scale left at None takes the loss class's own default, so each
    default lives in one place (the loss), and an explicit 0 is honoured."""
    given = {k: v for k, v in (("margin", config.margin), ("scale", config.scale)) if v is not None}
    if config.loss == "normsoftmax":
        return NormSoftmaxLoss(num_classes, config.dim, label_smoothing=config.label_smoothing, **given)
    if config.loss == "prototypical":
        return PrototypicalLoss(shot=1, **{k: v for k, v in given.items() if k == "scale"})
    if config.loss == "triplet":
        return TripletLoss(mining=config.mining, **{k: v for k, v in given.items() if k == "margin"})
    if config.loss == "contrastive":
        return ContrastiveLoss(**{k: v for k, v in given.items() if k == "margin"})
    if config.loss == "contrastive-pairs":
        return ContrastiveLoss(pairs="given", **{k: v for k, v in given.items() if k == "margin"})
    raise ValueError(f"unknown loss {config.loss!r}; choose from {LOSSES}")


def loss_labels(labels: np.ndarray, forges: np.ndarray | None, loss: str) -> np.ndarray:
    """The labels the loss sees. A forgery image is never a positive of the class it imitates; for the
    losses that only compare images (contrastive, triplet, prototypical) each forgery also gets a label of
    its own, so that it is a negative of everything and a positive of nothing (forgeries of one writer by
    different forgers are not one class). The proxy loss (normsoftmax) keeps a class per forged writer."""
    labels = np.asarray(labels, dtype=np.int64)
    if forges is None or loss == "normsoftmax":
        return labels
    out = labels.copy()
    forged = np.flatnonzero(forges[labels] >= 0)
    out[forged] = len(forges) + np.arange(len(forged))
    return out


def distance_spread(embeddings: np.ndarray, max_rows: int = 2000) -> float:
    """Standard deviation of the Euclidean distances between (up to `max_rows`) embeddings. Unit embeddings
    that all sit at one point give about 0: the collapse that contrastive training falls into when every
    distance is under its margin's reach."""
    x = np.asarray(embeddings[:max_rows], dtype=np.float64)
    if len(x) < 2:
        return 0.0
    sq = (x * x).sum(1)
    d = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None))
    return float(d[np.triu_indices(len(x), 1)].std())


def start_from(net: EmbeddingNet, weights: dict[str, torch.Tensor]) -> list[str]:
    """Copy `weights` (another model's, `twinsearch train --init`) into `net` before training: every
    backbone tensor must be there with its shape; the head's are copied where they fit and left fresh
    where they do not (another embedding size). Returns the names left fresh; ValueError, naming the
    first misfits, when the backbones differ."""
    own = net.state_dict()
    misfits = [name for name, tensor in own.items() if name.startswith("backbone.") and (
        name not in weights or tuple(weights[name].shape) != tuple(tensor.shape))]
    if misfits:
        shown = ", ".join(f"{n} {tuple(own[n].shape)} vs "
                          f"{tuple(weights[n].shape) if n in weights else 'missing'}" for n in misfits[:3])
        raise ValueError(f"the initial model's backbone does not fit this one ({len(misfits)} of "
                         f"{sum(n.startswith('backbone.') for n in own)} tensors differ: {shown}); give the same "
                         f"--backbone, --widths, --pool and --channels as it was trained with")
    fits = {n: w for n, w in weights.items() if n in own and tuple(w.shape) == tuple(own[n].shape)}
    net.load_state_dict(fits, strict=False)
    return sorted(n for n in own if n not in fits)


def _schedule(config: TrainConfig, step: int, elapsed: float) -> float:
    """Fraction of the run done, in [0, 1]: the larger of the step and the time fractions."""
    parts = []
    if config.steps:
        parts.append(step / config.steps)
    if config.minutes:
        parts.append(elapsed / (60.0 * config.minutes))
    return min(1.0, max(parts)) if parts else 0.0


def _lr_at(config: TrainConfig, progress: float) -> float:
    warm = min(1.0, progress / config.warmup) if config.warmup > 0 else 1.0
    return config.lr * warm * 0.5 * (1.0 + math.cos(math.pi * progress))



def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware: a CUDA GPU that supports it, or an x86 CPU with
    AVX-512 BF16 or AMX. Elsewhere torch emulates it, and a training step takes many times as long as in
    float32 (the README's "Training a model" has the figures)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(probe()) for probe in probes if probe is not None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a training runs in: "auto" is "bf16" where the device has it in hardware
    (`native_bf16`), else "fp32"; the others as they are."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision

class Trainer:
    """Train an embedding network on `train` (ImageArrays in [0, 1]), validating on `val` if given.

    `callback(event)` receives dicts: {"kind": "step", "step", "progress", "loss", "lr", "images"} (images:
    the batch's size), {"kind": "stage", "text"} as a validation starts and {"kind": "val", "step",
    ...metrics} when it ends. `checkpoint` (a path) is written at each validation and at the
    end; `fit(resume=True)` continues from it (same config), counting the time already spent.
    `init_weights` (another model's state dict): start from them instead of random weights (`start_from`).
    A step or validation that needs more memory than the device has raises `TrainingOutOfMemory`.
    """

    def __init__(self, config: TrainConfig, preprocess: Preprocess, train: ImageArrays,
                 val: ImageArrays | None = None, device: str | torch.device | None = None,
                 checkpoint: str | os.PathLike | None = None,
                 callback: Callable[[dict], None] | None = None,
                 init_weights: dict[str, torch.Tensor] | None = None):
        if not config.steps and not config.minutes:
            raise ValueError("give a step limit, a time budget in minutes, or both")
        if config.loss not in LOSSES:
            raise ValueError(f"unknown loss {config.loss!r}; choose from {LOSSES}")
        if config.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {config.precision!r}; choose from {PRECISIONS}")
        if not 0.0 <= config.ema < 1.0:
            raise ValueError(f"the weight average's decay (--ema) must be in [0, 1), got {config.ema}")
        if config.posterior_weight:
            if not 0.0 < config.posterior_weight <= 1.0:
                raise ValueError(f"posterior weight must be in (0, 1], got {config.posterior_weight}")
            if config.loss != "normsoftmax":
                raise ValueError("a class posterior needs the normsoftmax loss (its proxies are the classes)")
            if val is None or val.classes != train.classes:
                raise ValueError("a class posterior needs validation images of the training classes to fit its "
                                 "temperature (validation split by images)")
        self.config = config
        self.preprocess = preprocess
        self.train_data = train
        self.val = val
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available()
                                                                       else "cpu")
        self.precision = resolve_precision(config.precision, self.device)  # "fp32" or "bf16"
        self.checkpoint = os.fspath(checkpoint) if checkpoint else None
        self.callback = callback or (lambda event: None)
        self.init_weights = init_weights

    # ------------------------------------------------------------------ pieces
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.preprocess.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocess.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def _embed(self, net: EmbeddingNet, images: np.ndarray, batch: int = EMBED_BATCH) -> np.ndarray:
        net.eval()
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), batch):
                x = torch.from_numpy(images[s:s + batch]).to(self.device)
                x = self._normalize(x).contiguous(memory_format=torch.channels_last)
                out.append(net(x).float().cpu().numpy())
        net.train()
        return np.concatenate(out)

    def validate(self, net: EmbeddingNet) -> dict:
        """Validation metrics, and `score`, the one that picks the best checkpoint (higher is better).

        Always: one-shot accuracy (way = min(val_way, genuine classes), 1 shot) and Recall@1 over the
        genuine classes, and `val_distance_spread`, the standard deviation of the distances between
        validation embeddings (near 0: the embedding has collapsed). With forgeries in the validation data,
        also `val_skilled_eer` (reference-based, `VAL_REFERENCES` references per class, the mean over
        `VAL_REFERENCE_DRAWS` draws of the references), and the score is 1 - that EER: forgeries are what such a model is for. Otherwise the score is the one-shot accuracy."""
        assert self.val is not None
        emb = self._embed(net, self.val.images)
        forged = self.val.forgery_of_images() >= 0
        genuine_emb, genuine_labels = emb[~forged], self.val.labels[~forged]
        way = min(self.config.val_way, len(np.unique(genuine_labels)))
        shot = oneshot_accuracy(genuine_emb, genuine_labels, way, 1, self.config.val_episodes, seed=self.config.seed)
        ret = retrieval(genuine_emb, genuine_labels)
        metrics = {"val_oneshot": shot["accuracy"], "val_way": way, "val_recall_at_1": ret["recall_at_1"],
                   "val_distance_spread": distance_spread(net.learned_part(emb))}
        metrics["score"], metrics["score_name"] = shot["accuracy"], "val_oneshot"
        if forged.any():
            refs = references_allowed(genuine_labels, VAL_REFERENCES)
            reps = [reference_report(emb, self.val.labels, self.val.forges, refs, seed=self.config.seed + draw,
                                     interval=False)[0] for draw in range(VAL_REFERENCE_DRAWS)]
            if all(rep["skilled_eer"] is not None for rep in reps):
                skilled = float(np.mean([rep["skilled_eer"] for rep in reps]))
                random = [rep["random_eer"] for rep in reps]
                metrics.update(val_skilled_eer=skilled, val_references=refs,
                               val_random_eer=None if None in random else float(np.mean(random)))
                metrics["score"], metrics["score_name"] = 1.0 - skilled, "1 - val_skilled_eer"
        return metrics

    def _sampler(self, labels: np.ndarray, num_classes: int, seed: int):
        cfg = self.config
        if cfg.loss == "contrastive-pairs":
            return PairBatchSampler(labels, cfg.classes_per_batch * cfg.images_per_class // 2, seed=seed)
        genuine = num_classes if self._forges is None else int((self._forges < 0).sum())
        return PKSampler(labels, min(cfg.classes_per_batch, genuine), cfg.images_per_class, seed=seed,
                         class_groups=self._class_groups, groups_per_batch=cfg.groups_per_batch,
                         forges=self._forges)

    def _attach_posterior(self, net: EmbeddingNet, loss_fn: NormSoftmaxLoss,
                          architecture: dict) -> tuple[EmbeddingNet, dict]:
        """Give the trained net a ClassPosterior over the loss's proxies, its temperature fitted by the
        negative log-likelihood of the validation images' classes (temperature scaling, Guo et al. 2017):
        the posterior then means what it says, neither over- nor under-confident."""
        assert self.val is not None
        proxies = loss_fn.proxies.detach().cpu().float()
        posterior = ClassPosterior(len(proxies), net.head.dim, self.config.posterior_weight, temperature=1.0)
        posterior.proxies.copy_(proxies)
        with torch.no_grad():
            cos = posterior.cosines(torch.from_numpy(self._embed(net, self.val.images)))
        labels = torch.from_numpy(self.val.labels)
        grid = torch.logspace(0, 2, 201).tolist()  # temperatures 1 .. 100
        nll = [float(torch.nn.functional.cross_entropy(t * cos, labels)) for t in grid]
        best = int(np.argmin(nll))
        posterior.temperature = grid[best]
        net.posterior = posterior.to(self.device)
        log.info("class posterior: %d classes, weight %.3f, temperature %.2f (validation NLL %.4f)",
                 posterior.num_classes, posterior.weight, posterior.temperature, nll[best])
        architecture = {**architecture, "posterior": {"classes": posterior.num_classes,
                                                      "weight": posterior.weight,
                                                      "temperature": round(posterior.temperature, 4),
                                                      "validation_nll": round(nll[best], 4)}}
        return net, architecture

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        images, labels, num_classes = self.train_data.images, self.train_data.labels, self.train_data.num_classes
        class_groups = self.train_data.group_labels()
        self._forges = self.train_data.forges
        if cfg.rotations:
            n_groups = int(class_groups.max()) + 1
            n = num_classes
            images, labels, num_classes = expand_rotations(images, labels, num_classes)
            if self._forges is not None:  # a rotated forgery class forges the same rotation of its writer
                self._forges = np.concatenate([np.where(self._forges >= 0, self._forges + i * n, -1)
                                               for i in range(4)])
            # a rotated alphabet is a group of its own
            class_groups = np.concatenate([class_groups + i * n_groups for i in range(4)])
        self._class_groups = class_groups
        x_all = torch.from_numpy(images)
        y_all = torch.from_numpy(loss_labels(labels, self._forges, cfg.loss))
        architecture = architecture_for(cfg, self.preprocess)
        # channels-last runs the convolutions of these nets about 1.6x faster on CPU (oneDNN)
        net = build_net(architecture)
        if self.init_weights is not None and not resume:  # a resumed run has its own weights
            fresh = start_from(net, self.init_weights)
            log.info("started from the initial model's weights%s", f"; fresh: {', '.join(fresh)}" if fresh else "")
        net = net.to(self.device, memory_format=torch.channels_last)
        # The weights validated and kept: the net itself, or an average of its recent steps (buffers too,
        # so batch-norm statistics match the averaged weights).
        averaged = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) \
            if cfg.ema else None
        kept = net if averaged is None else averaged.module
        loss_fn = build_loss(cfg, num_classes).to(self.device)
        params = list(net.parameters()) + [p for p in loss_fn.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        fill = (1.0 - self.preprocess.background) if self.preprocess.invert else self.preprocess.background
        aug = RandomAffine(**{**cfg.augment, "scale": tuple(cfg.augment.get("scale", (0.8, 1.2))), "fill": fill}) \
            if cfg.augment else None
        sampler = self._sampler(labels, num_classes, seed=cfg.seed)
        step, spent, best_metric, best_step, best_state, history = 0, 0.0, None, 0, None, []
        best_loss_state = None
        if resume:
            if not self.checkpoint or not os.path.exists(self.checkpoint):
                raise FileNotFoundError(f"no checkpoint to resume from at {self.checkpoint!r}")
            ck = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
            # The budget (steps, minutes) may grow on resume; anything else must match.
            budget = ("steps", "minutes", "val_every", "threads")
            defaults = TrainConfig(steps=1).to_dict()  # settings added since the checkpoint: their defaults
            theirs = {k: ck["config"].get(k, defaults[k]) for k in defaults if k not in budget}
            ours = {k: v for k, v in cfg.to_dict().items() if k not in budget}
            if theirs != ours:
                changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
                raise ValueError(f"the checkpoint was written with a different training configuration "
                                 f"(changed: {', '.join(changed)})")
            net.load_state_dict(ck["net"])
            if averaged is not None:
                averaged.load_state_dict(ck["averaged"])
            loss_fn.load_state_dict(ck["loss"])
            opt.load_state_dict(ck["opt"])
            step, spent = ck["step"], ck["elapsed"]
            best_metric, best_step, best_state, history = ck["best_metric"], ck["best_step"], ck["best"], ck["history"]
            best_loss_state = ck.get("best_loss")
            gen.set_state(ck["gen"])
            sampler = self._sampler(labels, num_classes, seed=cfg.seed + step)  # reproducible from here
            log.info("resumed at step %d after %.0f s", step, spent)

        def save_checkpoint() -> None:
            if not self.checkpoint:
                return
            ck = {"config": cfg.to_dict(), "net": net.state_dict(), "loss": loss_fn.state_dict(),
                  "opt": opt.state_dict(), "step": step, "elapsed": spent + (time.monotonic() - t0),
                  "best_metric": best_metric, "best_step": best_step, "best": best_state, "history": history,
                  "best_loss": best_loss_state, "gen": gen.get_state(),
                  "averaged": None if averaged is None else averaged.state_dict()}
            tmp = f"{self.checkpoint}.tmp"
            torch.save(ck, tmp)
            os.replace(tmp, self.checkpoint)

        def run_validation() -> None:
            nonlocal best_metric, best_step, best_state, best_loss_state
            if self.val is None:
                return
            self.callback({"kind": "stage", "text": f"validating on {len(self.val)} images"})
            with _out_of_memory_as("validation", step, min(EMBED_BATCH, len(self.val)), self.preprocess,
                                   self.device):
                metrics = self.validate(kept)
            metrics.update(step=step, elapsed_s=round(spent + time.monotonic() - t0, 1))
            history.append(metrics)
            if best_metric is None or metrics["score"] >= best_metric:
                best_metric, best_step = metrics["score"], step
                best_state = copy.deepcopy({k: v.cpu() for k, v in kept.state_dict().items()})
                best_loss_state = copy.deepcopy({k: v.cpu() for k, v in loss_fn.state_dict().items()})
            self.callback({"kind": "val", **metrics, "best": best_metric})
            log.info("step %d: %s", step, metrics)

        net.train()
        t0 = time.monotonic()
        # The time budget covers the whole fit: the loop stops early by what the last validation and
        # checkpoint took, since one more of each runs after it.
        reserve = 0.0
        batches = iter(sampler)
        running = None
        stopped_by = "steps" if cfg.steps else "time"
        if resume and _schedule(cfg, step, spent) >= 1.0:
            self.callback({"kind": "warning", "text": f"the checkpoint is at step {step} after {spent / 60:.1f} "
                                                      "minutes, already past the budget: nothing more to train "
                                                      "(give a larger --steps or --minutes to go on)"})

        def on_stop_request() -> None:
            where = "save a checkpoint" if self.checkpoint else "stop"
            self.callback({"kind": "warning", "text": f"stopping after this step to {where} "
                                                      "(Ctrl-C again to stop at once)"})

        with _stop_requests(on_stop_request) as stop:
            while True:
                if stop.is_set():
                    save_checkpoint()
                    raise TrainingInterrupted(step, self.checkpoint)
                progress = _schedule(cfg, step, spent + time.monotonic() - t0 + reserve)
                if progress >= 1.0:
                    stopped_by = "steps" if cfg.steps and step >= cfg.steps else "time"
                    break
                lr = _lr_at(cfg, progress)
                for g in opt.param_groups:
                    g["lr"] = lr
                try:
                    idx = next(batches)
                except StopIteration:
                    batches = iter(sampler)
                    idx = next(batches)
                # An input size too large for the memory fails here, at the first step (the warning before
                # decoding is an estimate): told as what did not fit, not as torch's traceback.
                with _out_of_memory_as("training step", step + 1, len(idx), self.preprocess, self.device):
                    xb = x_all[idx]
                    if aug is not None:
                        xb = aug(xb, generator=gen)
                    xb = self._normalize(xb.to(self.device)).contiguous(memory_format=torch.channels_last)
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                        embeddings = net(xb)
                    loss = loss_fn(embeddings.float(), y_all[idx].to(self.device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                if averaged is not None:
                    averaged.update_parameters(net)
                step += 1
                value = float(loss.detach())
                running = value if running is None else 0.98 * running + 0.02 * value
                self.callback({"kind": "step", "step": step, "progress": progress, "loss": running, "lr": lr,
                               "images": len(idx)})
                if cfg.val_every and step % cfg.val_every == 0:
                    started = time.monotonic()
                    run_validation()
                    save_checkpoint()
                    reserve = time.monotonic() - started
        if self.val is not None and (not history or history[-1]["step"] != step):
            run_validation()
        save_checkpoint()
        elapsed = spent + time.monotonic() - t0
        if best_state is not None:
            net.load_state_dict(best_state)
            if best_loss_state is not None:
                loss_fn.load_state_dict(best_loss_state)
        else:
            best_step = step
            if averaged is not None:
                net.load_state_dict(averaged.module.state_dict())
        if cfg.posterior_weight:
            net, architecture = self._attach_posterior(net, loss_fn, architecture)
        log.info("trained %d steps in %.0f s; kept step %d (val %s)", step, elapsed, best_step, best_metric)
        return TrainResult(net.cpu().eval(), architecture, step, elapsed, best_step, best_metric, history, stopped_by)
