"""Shortcuts in forgery data: simple image statistics that tell genuine images from forgeries on their own.

In some signature collections the genuine signatures and the forgeries were scanned or written
differently (a grey background under every genuine scan and a white one under every forgery; darker ink
in the forgeries). A model can then "detect forgeries" by the paper or the pen, score well on writers it
never saw from the same collection, and fail on real documents. `shortcut_statistics` measures, for
each statistic, how well it alone separates genuine images from forgeries (ROC AUC folded to >= 0.5:
0.5 says nothing, 1.0 separates them perfectly), on the images as stored and as the model sees them.
"""

from __future__ import annotations

import numpy as np

from ..preprocess import otsu_threshold
from .metrics import roc_auc

# A statistic separating the two this well on its own is reported (folded ROC AUC).
SHORTCUT_AUC = 0.8

RAW_STATISTICS = ("background_level", "ink_level", "ink_fraction", "width", "height")
INPUT_STATISTICS = ("mean", "ink_fraction")


def raw_statistics(gray: np.ndarray) -> dict[str, float]:
    """Statistics of one stored image, grayscale (H, W) in [0, 1], dark ink on light paper:
    `background_level` (median of the pixels above the Otsu threshold), `ink_level` (5th percentile of the
    pixels at or below it: how dark the darkest ink is), `ink_fraction`, `width`, `height`."""
    t = otsu_threshold(gray)
    ink = gray <= t
    paper = gray[~ink]
    return {
        "background_level": float(np.median(paper)) if paper.size else 1.0,
        "ink_level": float(np.percentile(gray[ink], 5)) if ink.any() else 1.0,
        "ink_fraction": float(ink.mean()),
        "width": float(gray.shape[1]),
        "height": float(gray.shape[0]),
    }


def input_statistics(unit: np.ndarray) -> dict[str, float]:
    """Statistics of one preprocessed image (C, H, W) in [0, 1] as the network sees it (before
    normalisation): its `mean`, and the `ink_fraction` of pixels that differ from the most common value
    (the background after preprocessing)."""
    x = np.asarray(unit, dtype=np.float32)
    values, counts = np.unique(np.round(x, 3), return_counts=True)
    background = values[np.argmax(counts)]
    return {"mean": float(x.mean()), "ink_fraction": float((np.abs(x - background) > 1e-3).mean())}


def separability(genuine: np.ndarray, forged: np.ndarray) -> float:
    """Folded ROC AUC of one statistic between genuine and forged images: in [0.5, 1]."""
    if len(genuine) == 0 or len(forged) == 0:
        return 0.5
    auc = roc_auc(np.asarray(genuine, dtype=np.float64), np.asarray(forged, dtype=np.float64))
    return float(max(auc, 1.0 - auc))


def shortcut_statistics(stats: list[dict[str, float]], forged: np.ndarray) -> dict:
    """For per-image statistics `stats` and a (N,) bool mask of forgeries: {name: {"auc", "genuine_median",
    "forged_median"}} for every statistic, and "flagged": the names whose folded AUC >= SHORTCUT_AUC."""
    forged = np.asarray(forged, dtype=bool)
    out: dict = {"flagged": []}
    for name in stats[0] if stats else ():
        values = np.array([s[name] for s in stats], dtype=np.float64)
        auc = separability(values[~forged], values[forged])
        out[name] = {"auc": round(auc, 4), "genuine_median": float(np.median(values[~forged])),
                     "forged_median": float(np.median(values[forged]))}
        if auc >= SHORTCUT_AUC:
            out["flagged"].append(name)
    return out
