"""Plots of an evaluation as PNG files (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .metrics import roc_curve


def write_plots(genuine: np.ndarray, impostor: np.ndarray, folder: str | os.PathLike, title: str = "",
                threshold: float | None = None) -> list[str]:
    """Write roc.png (ROC, log FAR axis), det.png (FRR vs FAR) and distances.png (genuine and impostor
    distance histograms). Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    far, tar, _ = roc_curve(genuine, impostor)
    floor = 1.0 / max(len(impostor), 1)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(np.maximum(far, floor), tar)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC {title}".strip())
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    paths.append(str(folder / "roc.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(np.maximum(far, floor), np.maximum(1 - tar, 1.0 / max(len(genuine), 1)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("false reject rate")
    ax.set_title(f"DET {title}".strip())
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    paths.append(str(folder / "det.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 2, 81)
    ax.hist(genuine, bins=bins, alpha=0.6, density=True, label=f"genuine ({len(genuine)})")
    ax.hist(impostor, bins=bins, alpha=0.6, density=True, label=f"impostor ({len(impostor)})")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("Euclidean distance (smaller = more alike)")
    ax.set_ylabel("density")
    ax.set_title(f"distances {title}".strip())
    ax.legend()
    fig.tight_layout()
    paths.append(str(folder / "distances.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
