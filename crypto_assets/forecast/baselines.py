"""Naive and drift baselines with normal prediction intervals.

Both work on the price scale. Forecasts are computed for many origins at once
(`cut_idx`: index of the last training row of each origin), so CV costs a few
array operations instead of a loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

NAIVE = "naive"
DRIFT = "drift"


class PointInterval(NamedTuple):
    """Arrays of shape (n_origins, n_horizons)."""

    yhat: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def _prefix_sums(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative sum of one-step differences and of their squares, with a leading 0."""
    d = np.diff(y)
    zero = np.zeros(1)
    return np.concatenate([zero, np.cumsum(d)]), np.concatenate([zero, np.cumsum(d * d)])


def _check(y: np.ndarray, cut_idx: np.ndarray, min_idx: int) -> None:
    if cut_idx.size and (cut_idx.min() < min_idx or cut_idx.max() >= len(y)):
        raise ValueError(f"cut_idx must lie in [{min_idx}, {len(y) - 1}]")


def naive(y: np.ndarray, cut_idx: np.ndarray, horizons: Sequence[int], z: float) -> PointInterval:
    """Last value; sigma_h = sigma * sqrt(h), sigma = RMS of one-step differences.

    The naive model's residuals are the differences themselves (no mean removed).
    """
    cut_idx = np.asarray(cut_idx, dtype=np.int64)
    _check(y, cut_idx, 1)
    h = np.asarray(horizons, dtype=float)[None, :]
    _, sq = _prefix_sums(y)
    sigma = np.sqrt(sq[cut_idx] / cut_idx)[:, None]
    yhat = np.repeat(y[cut_idx][:, None], h.shape[1], axis=1)
    half = z * sigma * np.sqrt(h)
    return PointInterval(yhat, yhat - half, yhat + half)


def drift(y: np.ndarray, cut_idx: np.ndarray, horizons: Sequence[int], z: float) -> PointInterval:
    """Random walk with drift: last + h * (last - first) / (n - 1).

    sigma is the sample sd of the one-step differences (residuals after removing
    the drift), widened as sigma * sqrt(h * (1 + h / n)) for the drift estimate's
    own error (Hyndman & Athanasopoulos, FPP3 5.5).
    """
    cut_idx = np.asarray(cut_idx, dtype=np.int64)
    _check(y, cut_idx, 2)
    h = np.asarray(horizons, dtype=float)[None, :]
    _, s2 = _prefix_sums(y)
    k = cut_idx.astype(float)  # number of differences = n - 1
    slope = (y[cut_idx] - y[0]) / k
    # Rounding can push the variance of a constant/linear series slightly below 0.
    var = np.maximum(s2[cut_idx] - k * slope**2, 0.0) / (k - 1.0)
    sigma = np.sqrt(var)[:, None]
    yhat = y[cut_idx][:, None] + h * slope[:, None]
    half = z * sigma * np.sqrt(h * (1.0 + h / (k[:, None] + 1.0)))
    return PointInterval(yhat, yhat - half, yhat + half)
