"""Seeded bootstrap: the same input gives the same numbers."""

from __future__ import annotations

import numpy as np

RESAMPLES = 1000
SEED = 0


def bootstrap_ci(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """95% percentile interval of the mean."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (resamples, len(values)))
    means = values[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Mean difference a - b over the same examples, its 95% interval, and a two-sided p-value."""
    if len(a) != len(b):
        raise ValueError("paired bootstrap needs scores of the same examples")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (resamples, len(a)))
    diffs = (a[idx] - b[idx]).mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    return {"diff": float((a - b).mean()), "ci95": [float(lo), float(hi)], "p": float(min(1.0, p))}
