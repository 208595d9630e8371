"""Rolling-origin cross-validation of Prophet against the naive and drift baselines.

A cut-off is the last day of a fold's training data (training = ds <= cutoff);
the fold forecasts cutoff + h for every h in cv_horizons. Every model sees the
same folds and the same target days, so per-horizon metrics compare like with like.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from datetime import date
from typing import NamedTuple

import numpy as np
import polars as pl

from crypto_assets.forecast.baselines import BASELINES, DRIFT, NAIVE
from crypto_assets.forecast.history import Series, to_series
from crypto_assets.forecast.metrics import summarize
from crypto_assets.forecast.model import fit_arrays, predict_arrays
from crypto_assets.forecast.options import DEFAULT_OPTIONS, ForecastOptions

PROPHET = "prophet"
ALL_MODELS = (PROPHET, NAIVE, DRIFT)

PREDICTIONS_SCHEMA = {
    "symbol": pl.String,
    "model": pl.String,
    "cutoff": pl.Date,
    "horizon": pl.Int32,
    "ds": pl.Date,
    "y": pl.Float64,
    "yhat": pl.Float64,
    "yhat_lower": pl.Float64,
    "yhat_upper": pl.Float64,
    # Last ds the model was actually trained on (checked against ds in tests).
    "train_end": pl.Date,
}


class CVResult(NamedTuple):
    predictions: pl.DataFrame
    metrics: pl.DataFrame


def cutoff_indices(n_rows: int, options: ForecastOptions) -> np.ndarray:
    """Row indices of the cut-offs, ascending.

    Anchored at the end (the last cut-off is the latest day whose longest
    horizon is still observed) and stepped back every cv_period_days while the
    training window keeps at least cv_initial_days rows; the most recent
    cv_max_cutoffs are kept.
    """
    last = n_rows - 1 - max(options.cv_horizons)
    first = options.cv_initial_days - 1
    if last < first:
        raise ValueError(
            f"{n_rows} rows are too few for cv_initial_days={options.cv_initial_days} "
            f"plus a {max(options.cv_horizons)}-day horizon"
        )
    idx = np.arange(last, first - 1, -options.cv_period_days)
    if options.cv_max_cutoffs is not None:
        idx = idx[: options.cv_max_cutoffs]
    return idx[::-1].copy()


def make_cutoffs(history: pl.DataFrame, options: ForecastOptions = DEFAULT_OPTIONS) -> list[date]:
    series = to_series(history)
    return [d.item() for d in series.ds[cutoff_indices(len(series.ds), options)]]


def _frame(
    series: Series,
    model: str,
    cut_idx: np.ndarray,
    horizons: Sequence[int],
    pred: np.ndarray,
    train_end: np.ndarray,
) -> pl.DataFrame:
    """Long rows for one model; pred has shape (n_cutoffs, n_horizons, 3)."""
    h = np.asarray(horizons)
    target = (cut_idx[:, None] + h[None, :]).ravel()
    n_h = len(h)
    return pl.DataFrame(
        {
            "symbol": [series.symbol] * target.size,
            "model": [model] * target.size,
            "cutoff": np.repeat(series.ds[cut_idx], n_h),
            "horizon": np.tile(h, len(cut_idx)),
            "ds": series.ds[target],
            "y": series.y[target],
            "yhat": pred[..., 0].ravel(),
            "yhat_lower": pred[..., 1].ravel(),
            "yhat_upper": pred[..., 2].ravel(),
            "train_end": np.repeat(train_end, n_h),
        },
        schema=PREDICTIONS_SCHEMA,
    )


def _baseline_frames(
    series: Series, cut_idx: np.ndarray, options: ForecastOptions, models: Sequence[str]
) -> list[pl.DataFrame]:
    frames = []
    for name in models:
        if name not in BASELINES:
            continue
        pi = BASELINES[name](series.y, cut_idx, options.cv_horizons, options.z)
        pred = np.stack([pi.yhat, pi.lower, pi.upper], axis=-1)
        # Baselines read y[: cut + 1] only, by construction of the prefix sums.
        frames.append(_frame(series, name, cut_idx, options.cv_horizons, pred, series.ds[cut_idx]))
    return frames


def _prophet_fold(
    ds: np.ndarray, y: np.ndarray, horizons: tuple[int, ...], options: ForecastOptions
) -> tuple[np.ndarray, np.datetime64]:
    """Worker: fit on the training slice it is given, predict cutoff + h.

    Top-level (picklable) and polars-free so it is safe under any start method.
    """
    model = fit_arrays(ds, y, options)
    targets = ds[-1] + np.asarray(horizons)
    pred = np.stack(predict_arrays(model, targets, options), axis=-1)
    train_end = np.datetime64(model.history["ds"].max().date(), "D")
    return pred, train_end


def make_executor(options: ForecastOptions, max_workers: int | None = None) -> ProcessPoolExecutor:
    """Process pool for the Prophet folds; reuse one across symbols to pay start-up once."""
    ctx = multiprocessing.get_context(options.cv_mp_context)
    return ProcessPoolExecutor(max_workers=max_workers or options.cv_workers, mp_context=ctx)


def _prophet_folds(
    folds: list[tuple[np.ndarray, np.ndarray]], options: ForecastOptions, executor: Executor | None
) -> list[tuple[np.ndarray, np.datetime64]]:
    """Run _prophet_fold on each (ds, y) training slice, in parallel when configured."""
    horizons = tuple(options.cv_horizons)
    if executor is None and (options.cv_workers == 1 or len(folds) == 1):
        return [_prophet_fold(ds, y, horizons, options) for ds, y in folds]
    own = executor is None
    pool = make_executor(options, min(options.cv_workers, len(folds))) if own else executor
    try:
        futures = [pool.submit(_prophet_fold, ds, y, horizons, options) for ds, y in folds]
        return [f.result() for f in futures]
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)


def _prophet_frame(
    series: Series, cut_idx: np.ndarray, options: ForecastOptions, executor: Executor | None
) -> pl.DataFrame:
    # Longest training windows first: they are the slowest, so the pool ends evenly.
    order = np.argsort(-cut_idx, kind="stable")
    folds = [(series.ds[: cut_idx[i] + 1], series.y[: cut_idx[i] + 1]) for i in order]
    by_cut = dict(zip(order.tolist(), _prophet_folds(folds, options, executor), strict=True))
    pred = np.stack([by_cut[i][0] for i in range(len(cut_idx))])
    train_end = np.array([by_cut[i][1] for i in range(len(cut_idx))], dtype="datetime64[D]")
    return _frame(series, PROPHET, cut_idx, options.cv_horizons, pred, train_end)


def cross_validate(
    history: pl.DataFrame,
    options: ForecastOptions = DEFAULT_OPTIONS,
    *,
    models: Sequence[str] = ALL_MODELS,
    executor: Executor | None = None,
) -> CVResult:
    """Rolling-origin CV; returns the long predictions table and per-(model, horizon) metrics.

    models: any of "prophet", "naive", "drift" (baselines alone need no Prophet fit).
    executor: optional shared pool; otherwise one with cv_workers processes is
    created for this call (or none when cv_workers == 1).
    """
    unknown = set(models) - set(ALL_MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}")
    series = to_series(history, require_positive=options.log_price and PROPHET in models)
    cut_idx = cutoff_indices(len(series.ds), options)
    frames = []
    if PROPHET in models:
        frames.append(_prophet_frame(series, cut_idx, options, executor))
    frames.extend(_baseline_frames(series, cut_idx, options, models))
    predictions = pl.concat(frames)
    return CVResult(predictions, summarize(predictions))


def _ready(delay_s: float) -> int:
    time.sleep(delay_s)
    return os.getpid()


def warm_up(executor: Executor, n_workers: int, timeout_s: float = 60.0) -> int:
    """Start the pool's workers now (a spawned worker spends ~2-3 s importing Prophet).

    A pool starts workers on demand and a fast worker can take every small task,
    so ask in rounds until n_workers distinct processes have answered. Returns
    how many did.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < n_workers and time.monotonic() < deadline:
        seen.update(executor.map(_ready, [0.2] * n_workers))
    return len(seen)
