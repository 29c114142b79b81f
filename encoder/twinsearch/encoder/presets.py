"""Training presets: the measured recipes of `bench/encoder_recipes.py`, by kind of data.

`twinsearch train --preset NAME` starts from the preset's settings; any flag given beside it overrides
the preset (`--preset signatures --minutes 5 --size 64 128`). Each value is a `twinsearch train` flag
(its argparse name) and what it is set to. The card records the preset under `training.preset`.

Precision "auto" trains in bfloat16 where the hardware has it (AVX-512 BF16 or AMX, recent GPUs), where the
recipes were measured and it was faster, and in float32 elsewhere: on a CPU without it torch emulates
bfloat16, many times slower (README, "Training a model"). The card records what it became
(`training.precision`).

Where each was measured (2 CPU cores, 20 minutes unless said; `bench/results/encoder_*.json`):
- characters: Omniglot, the shipped `omniglot.tsm` (0.858 within-alphabet 20-way 1-shot on alphabets
  never trained on). Ink on white, square input, rotations as extra classes, prototypical episodes.
- signatures: the ICDAR 2011 Dutch signatures, writers 001-048 trained, 049-069 evaluated with 5
  references (the shipped `signatures.tsm`; its card holds the figures). Wide input (height 96, width
  192), background removed and binarised by Otsu's threshold (so neither paper nor pen darkness can tell
  a forgery), cropped to the ink; prototypical loss with a writer's own forgeries beside it as negatives;
  a histogram of the strokes' directions in the left and right halves takes 0.65 of the squared distance
  (chosen on validation writers: docs/signatures.md).
- clothing: Fashion-MNIST (pairs 0.949, Recall@1 0.932 with the plain embedding; add
  `--posterior-weight 0.75 --val-by images --val-fraction 0.05` for the closed-set figures 0.961 / 0.929).
  Small grey images, two convs per block, mirror views.
- digits: the clothing recipe without mirrors (digits are not mirror-symmetric). No digit data set is on
  hand to measure it: a starting point.
- photos: RGB photographs (faces, objects), the small residual net at 64 px, its first convolution
  strided (a sixth of the step time: about 2 steps/s on 2 cores instead of 0.4), with mirror augmentation
  and views. No photographs are on hand: checked on the stand-ins (Omniglot, Fashion-MNIST, signatures)
  for not collapsing, in `bench/preset_sweep.py`.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "characters": {
        "invert": True, "size": [32], "rotations": True, "loss": "prototypical",
        "classes_per_batch": 60, "images_per_class": 2, "groups_per_batch": 2, "aug_elastic": 0.03,
        "tta": 2, "val_every": 200,
    },
    "signatures": {
        "invert": True, "size": [96, 192], "resize": "fit", "background_removal": "otsu", "binarize": "otsu",
        "crop_to_ink": True, "backbone": "conv4", "widths": [32, 64, 96, 128], "pool": "avg",
        "loss": "prototypical", "scale": 10.0, "classes_per_batch": 16, "images_per_class": 4,
        "precision": "auto", "aug_rotation": 5.0, "aug_shear": 0.15,
        "aug_scale": [0.9, 1.1], "aug_translate": 0.05, "val_fraction": 0.2, "val_every": 100,
        "orientation_weight": 0.65,
    },
    "clothing": {
        "size": [28], "mean": [0.286], "std": [0.353], "widths": [32, 64, 128], "convs_per_block": [2],
        "precision": "auto", "tta": 1, "tta_flip": True, "loss": "normsoftmax", "margin": 0.25, "scale": 30.0,
        "classes_per_batch": 10, "images_per_class": 25, "aug_rotation": 0.0, "aug_shear": 0.0,
        "aug_scale": [0.95, 1.05], "aug_translate": 0.06, "aug_hflip": 0.5, "val_every": 1000,
    },
    "digits": {
        "size": [28], "mean": [0.13], "std": [0.31], "widths": [32, 64, 128], "convs_per_block": [2],
        "precision": "auto", "tta": 1, "loss": "normsoftmax", "margin": 0.25, "scale": 30.0,
        "classes_per_batch": 10, "images_per_class": 25, "aug_rotation": 8.0, "aug_shear": 0.1,
        "aug_scale": [0.9, 1.1], "aug_translate": 0.08, "val_every": 1000,
    },
    "photos": {
        "channels": 3, "size": [64], "backbone": "resnet", "widths": [32, 64, 128], "stem_stride": 2,
        "precision": "auto",
        "mean": [0.5], "std": [0.25], "loss": "normsoftmax", "margin": 0.2, "scale": 30.0,
        "classes_per_batch": 16, "images_per_class": 8, "aug_rotation": 8.0, "aug_shear": 0.05,
        "aug_scale": [0.9, 1.1], "aug_translate": 0.06, "aug_hflip": 0.5, "tta_flip": True, "val_every": 200,
    },
}


def preset(name: str) -> dict[str, Any]:
    """A copy of preset `name`'s settings. Raises ValueError naming the presets for an unknown name."""
    try:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in PRESETS[name].items()}
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
