"""Our calibration code against scikit-learn's, on the same data: do they measure the same, and at what cost?

    python -m venv /tmp/skl && /tmp/skl/bin/pip install numpy scikit-learn
    /tmp/skl/bin/python bench/sklearn_check.py

scikit-learn is not a dependency of twinsearch (with scipy it is about 200 MB installed); this compares
`evaluation.metrics.roc_auc` with `sklearn.metrics.roc_auc_score`, and the isotonic mapping of
`calibration.Calibration` (`_fit_isotonic`: class-balanced pool-adjacent-violators, thinned to knots
within a quarter of a log-odds unit) with `sklearn.isotonic.IsotonicRegression` given the same weights,
on seeded genuine and impostor distances of the sizes the encoder calibrates with. It loads the two
modules from their files, so that neither torch nor the rest of the package is needed.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ENCODER = Path(__file__).resolve().parent.parent / "encoder" / "twinsearch" / "encoder"


def _calibration():
    spec = importlib.util.spec_from_file_location("twinsearch_calibration", ENCODER / "calibration.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _roc_auc():
    """`roc_auc` from evaluation/metrics.py alone (the module imports the samplers, which need torch)."""
    source = (ENCODER / "evaluation" / "metrics.py").read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "roc_auc")
    scope = {"np": np}
    exec(compile(ast.Module([node], []), "metrics.py", "exec"), scope)  # noqa: S102 - our own file
    return scope["roc_auc"]


def main() -> int:
    try:
        from sklearn.isotonic import IsotonicRegression
        from sklearn.metrics import roc_auc_score
    except ImportError:
        print("scikit-learn is not installed here; see the module docstring", file=sys.stderr)
        return 2
    cal, roc_auc = _calibration(), _roc_auc()
    rng = np.random.default_rng(0)
    for n_genuine, n_impostor in ((2_000, 20_000), (30_000, 4_800_000)):
        genuine = np.round(rng.normal(0.6, 0.15, n_genuine), 4)
        impostor = np.round(rng.normal(1.2, 0.15, n_impostor), 4)
        t0 = time.perf_counter()
        ours = roc_auc(genuine, impostor)
        t1 = time.perf_counter()
        y = np.r_[np.ones(n_genuine), np.zeros(n_impostor)]
        d = np.r_[genuine, impostor]
        theirs = roc_auc_score(y, -d)
        t2 = time.perf_counter()
        print(f"ROC AUC, {n_genuine} + {n_impostor} pairs: ours {ours:.12f} in {t1 - t0:.3f} s, scikit-learn "
              f"{theirs:.12f} in {t2 - t1:.3f} s, difference {abs(ours - theirs):.1e}")
        t0 = time.perf_counter()
        knots = cal._fit_isotonic(genuine, impostor)
        t1 = time.perf_counter()
        weights = np.r_[np.full(n_genuine, 0.5 / n_genuine), np.full(n_impostor, 0.5 / n_impostor)]
        iso = IsotonicRegression(increasing=False, out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6)
        iso.fit(d, y, sample_weight=weights)
        t2 = time.perf_counter()
        xs = np.linspace(d.min(), d.max(), 2001)
        kx, kp = np.array(knots).T
        p_ours, p_theirs = np.interp(xs, kx, kp), iso.predict(xs)
        logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
        print(f"isotonic: ours {len(knots)} knots in {t1 - t0:.3f} s, scikit-learn {len(iso.X_thresholds_)} "
              f"knots in {t2 - t1:.3f} s; largest difference {np.abs(p_ours - p_theirs).max():.4f} in "
              f"probability, {np.abs(logit(p_ours) - logit(p_theirs)).max():.3f} in log-odds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
