"""Training speed of each preset's network: steps per second, with and without bf16 and channels-last.

    .venv/bin/python bench/encoder_speed.py [--steps 8] [--threads 2] [--json bench/results/encoder_speed.json]

The time per step decides what a fixed budget can learn (a 20-minute run at 1 step/s is 1,200 steps), so
each preset is timed as it trains: its backbone, input size, batch (P x K, and the forgeries beside each
class for signatures), loss and augmentation, on random images. One warm-up step is not timed. Figures
move with the machine's load: compare the rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from twinsearch.encoder.augment import RandomAffine
from twinsearch.encoder.heads import build_net
from twinsearch.encoder.preprocess import Preprocess
from twinsearch.encoder.presets import PRESETS
from twinsearch.encoder.training import TrainConfig
from twinsearch.encoder.training.trainer import architecture_for, build_loss, native_bf16

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402


def config_of(name: str) -> tuple[TrainConfig, Preprocess, int]:
    """The preset's training configuration, its preprocessing, and the images in one batch."""
    p = PRESETS[name]
    size = p.get("size", [56])
    pre = Preprocess(height=size[0], width=size[-1], channels=p.get("channels", 1))
    backbone_args = {k: (v[0] if k == "convs_per_block" else v) for k, v in p.items()
                     if k in ("widths", "pool", "convs_per_block", "stem_stride")}
    cfg = TrainConfig(backbone=p.get("backbone", "conv4"), backbone_args=backbone_args, loss=p.get("loss", "prototypical"),
                      margin=p.get("margin"), scale=p.get("scale"),
                      classes_per_batch=p.get("classes_per_batch", 64), images_per_class=p.get("images_per_class", 2),
                      steps=1, precision=p.get("precision", "fp32"))
    batch = cfg.classes_per_batch * cfg.images_per_class * (2 if name == "signatures" else 1)
    return cfg, pre, batch


def time_steps(cfg: TrainConfig, pre: Preprocess, batch: int, steps: int, precision: str,
               channels_last: bool) -> float:
    """Seconds per training step (forward, loss, backward, AdamW update, augmentation)."""
    torch.manual_seed(0)
    net = build_net(architecture_for(cfg, pre))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt).train()
    labels = torch.arange(batch) // cfg.images_per_class
    loss_fn = build_loss(cfg, int(labels.max()) + 1)
    opt = torch.optim.AdamW(list(net.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    aug = RandomAffine()
    x = torch.rand((batch,) + pre.shape)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        xb = aug(x, generator=gen).contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            emb = net(xb)
        loss = loss_fn(emb.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'preset':<11} {'backbone':<8} {'input':<10} {'batch':>5} {'precision':<9} {'layout':<13} "
          f"{'s/step':>7} {'steps/s':>7} {'img/s':>7}")
    for name in args.presets:
        cfg, pre, batch = config_of(name)
        for precision in ("fp32", "bf16"):
            for channels_last in (False, True):
                s = time_steps(cfg, pre, batch, args.steps, precision, channels_last)
                row = {"preset": name, "backbone": cfg.backbone, "input": list(pre.shape), "batch": batch,
                       "precision": precision, "channels_last": channels_last, "s_per_step": round(s, 4),
                       "steps_per_s": round(1 / s, 3), "images_per_s": round(batch / s, 1)}
                rows.append(row)
                layout = "channels-last" if channels_last else "contiguous"
                print(f"{name:<11} {cfg.backbone:<8} {'x'.join(map(str, pre.shape)):<10} {batch:>5} {precision:<9} "
                      f"{layout:<13} {s:>7.3f} {1 / s:>7.2f} {batch / s:>7.0f}", flush=True)
    if args.json:
        cpu = {"model": machine()["cpu_model"], "native_bf16": native_bf16(torch.device("cpu"))}
        Path(args.json).write_text(json.dumps({"threads": args.threads, "cpu": cpu, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
