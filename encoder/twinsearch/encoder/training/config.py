"""Training configuration: one dataclass, recorded in the model card."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run.

    loss: "prototypical" (episodes of P-way 1-shot, K-1 queries; default: measured best on Omniglot),
    "normsoftmax" (proxy classifier; suits closed-set data),
    "triplet" (with `mining`), or "contrastive" (in-batch over P x K, or `pairs` for classic pairs).
    Batches: P classes x K images (episodes: P-way, 1 support + K-1 queries per class).
    The learning rate warms up over `warmup` of the run, then follows a cosine to 0; progress is the
    larger of steps done / `steps` and time spent / `minutes`, so a time budget ends the run on time (the
    loop stops early by what one validation and checkpoint take, as one more of each follows it).
    """

    backbone: str = "conv4"
    backbone_args: dict = field(default_factory=dict)
    dim: int = 128
    head_args: dict = field(default_factory=dict)
    tta_shifts: list = field(default_factory=list)  # [[dy, dx], ...] test-time shifts averaged into one embedding
    tta_flip: bool = False    # also average the left-right mirror of each test-time view
    posterior_weight: float = 0.0  # > 0 (normsoftmax, closed set): share of the squared distance taken by the
    #                                class posterior over the training classes (heads.ClassPosterior)
    orientation_weight: float = 0.0  # > 0: share of the squared distance taken by a fixed histogram of the
    #                                  image's gradient directions (heads.OrientationHistogram)
    orientation_cells: list = field(default_factory=lambda: [1, 2])  # its regions: rows, columns
    orientation_bins: int = 8        # its directions over 180 degrees
    loss: str = "prototypical"
    margin: float | None = None  # None: the loss's own default (one place for each: the loss class)
    scale: float | None = None
    mining: str = "batch_hard"
    label_smoothing: float = 0.0
    classes_per_batch: int = 64
    images_per_class: int = 2
    groups_per_batch: int = 0  # > 0: a batch's classes come from this many groups (hard batches; not
                               # where every group is one class)
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup: float = 0.03
    steps: int = 0            # 0: no step limit (needs minutes)
    minutes: float = 0.0      # 0: no time limit (needs steps)
    rotations: bool = False   # rotated copies as extra classes
    augment: dict | None = field(default_factory=lambda: {"rotation": 10.0, "shear": 0.3, "scale": [0.8, 1.2],
                                                          "translate": 0.1})
    val_every: int = 200      # steps between validations
    val_episodes: int = 200
    val_way: int = 20
    ema: float = 0.0          # > 0: validate and keep an exponential moving average of the weights, this
    #                           decay per step (0.99: about the last 100 steps), instead of the last step's
    seed: int = 0
    threads: int = 0          # 0: leave torch's default
    precision: str = "fp32"   # "bf16": forward pass under bfloat16 autocast (about 1.1-2x faster on CPUs with
    #                           AVX-512 BF16 or AMX, and on recent GPUs; many times slower on CPUs without
    #                           them); "auto": bf16 where the hardware has it, else fp32. The loss, weights
    #                           and serving stay fp32

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
