"""Rolling-origin cross-validation of every candidate model on the same origins.

An origin (cut-off) is the last day of a fold's training data: the fold trains on ds <= cutoff (an expanding
window) and forecasts cutoff + 1 .. cutoff + horizon_days. Every model sees the same folds and target days, so
per-horizon metrics compare like with like. Origins step back from the latest one whose whole path is observed,
every cv_period_days; a short history gets fewer origins, down to cv_min_cutoffs.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import NamedTuple

import numpy as np
import polars as pl

from crypto_assets.forecast.candidates import candidate_paths
from crypto_assets.forecast.evaluation import evaluate
from crypto_assets.forecast.history import Series, to_series
from crypto_assets.forecast.options import DEFAULT_OPTIONS, ForecastOptions

__all__ = ["CVResult", "TooShortHistory", "cross_validate", "cutoff_indices"]

PREDICTIONS_SCHEMA = {
    "symbol": pl.String,
    "model": pl.String,
    "cutoff": pl.Date,
    "horizon": pl.Int32,
    "ds": pl.Date,
    "y": pl.Float64,
    "yhat": pl.Float64,
    # Volatility before the origin, weighted by the weekdays ahead: the scale of the conformal interval.
    "scale": pl.Float64,
    # Last ds the fold was trained on (checked against ds in tests).
    "train_end": pl.Date,
}

Progress = Callable[[int, int], None]


class TooShortHistory(ValueError):
    """The history cannot hold cv_min_cutoffs origins: the forecast graph skips the symbol."""


class CVResult(NamedTuple):
    predictions: pl.DataFrame
    metrics: pl.DataFrame
    # Origins used, and the number a full history would get (fewer means a short history).
    n_cutoffs: int
    max_cutoffs: int
    errors: tuple[str, ...] = ()

    @property
    def short_history(self) -> bool:
        return self.n_cutoffs < self.max_cutoffs

    def note(self) -> str:
        if not self.short_history:
            return f"{self.n_cutoffs} origins"
        return f"short history: {self.n_cutoffs} origins instead of {self.max_cutoffs}"


def cutoff_indices(n_rows: int, options: ForecastOptions) -> np.ndarray:
    """Row indices of the origins, ascending.

    Anchored at the end (the last origin is the latest day whose whole forecast path is observed) and
    stepped back every cv_period_days while each fold keeps at least cv_initial_days of training; the most
    recent cv_max_cutoffs are kept. Raises TooShortHistory below cv_min_cutoffs origins.
    """
    last = n_rows - 1 - options.horizon_days
    first = options.cv_initial_days - 1
    idx = np.arange(last, first - 1, -options.cv_period_days) if last >= first else np.arange(0)
    if options.cv_max_cutoffs is not None:
        idx = idx[: options.cv_max_cutoffs]
    if len(idx) < options.cv_min_cutoffs:
        raise TooShortHistory(
            f"{n_rows} days of history are too few for the forecast's cross-validation: it needs at least "
            f"{options.min_history_days()} ({options.cv_min_cutoffs} origins {options.cv_period_days} days apart, "
            f"each with {options.cv_initial_days} days of training and {options.horizon_days} observed days after)"
        )
    return idx[::-1].copy()


def full_cutoff_count(options: ForecastOptions, n_rows: int) -> int:
    if options.cv_max_cutoffs is not None:
        return options.cv_max_cutoffs
    return len(cutoff_indices(n_rows, options))


def make_executor(options: ForecastOptions, max_workers: int | None = None) -> ProcessPoolExecutor:
    """Process pool for the folds; reuse one across symbols to pay start-up once."""
    ctx = multiprocessing.get_context(options.cv_mp_context)
    return ProcessPoolExecutor(max_workers=max_workers or options.cv_workers, mp_context=ctx)


def _fold(ds: np.ndarray, y: np.ndarray, options: ForecastOptions):
    paths, errors = candidate_paths(ds, y, options)
    return paths, errors, ds[-1]


def fold_paths(
    series: Series,
    cut_idx: np.ndarray,
    options: ForecastOptions,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> list[tuple[dict[str, np.ndarray], dict[str, str], np.datetime64]]:
    """candidate_paths on series[: cut + 1] for every origin, in origin order; in parallel when configured.

    Each worker receives only its slice, so no fold can see a day after its origin.
    """
    folds = [(series.ds[: c + 1], series.y[: c + 1]) for c in cut_idx]
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(folds))

    if executor is None and (options.cv_workers == 1 or len(folds) == 1):
        out = []
        for ds, y in folds:
            out.append(_fold(ds, y, options))
            tick()
        return out
    own = executor is None
    pool = make_executor(options, min(options.cv_workers, len(folds))) if own else executor
    try:
        # Longest training slices first: they are the slowest, so the pool ends evenly.
        order = np.argsort(-cut_idx, kind="stable")
        futures = {int(i): pool.submit(_fold, *folds[i], options) for i in order}
        results = {}
        for i in order:
            results[int(i)] = futures[int(i)].result()
            tick()
        return [results[i] for i in range(len(folds))]
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)


def volatility(y: np.ndarray, cut_idx: np.ndarray, window: int) -> np.ndarray:
    """Standard deviation of the daily log returns of the `window` days up to each origin (inclusive)."""
    r = np.diff(np.log(y))
    out = np.empty(len(cut_idx))
    for k, c in enumerate(cut_idx):
        recent = r[max(0, c - window) : c]
        out[k] = recent.std(ddof=1) if len(recent) >= 2 else np.nan
    return np.where(out > 0, out, np.nan)


def weekday(ds: np.ndarray) -> np.ndarray:
    """0 = Monday (1970-01-01 was a Thursday)."""
    return (ds.astype("datetime64[D]").astype(np.int64) + 3) % 7


PROFILE_DAYS = 364


def interval_scales(ds: np.ndarray, y: np.ndarray, cut_idx: np.ndarray, options: ForecastOptions) -> np.ndarray:
    """(origins, horizon_days) scale of each fold's conformal score: the recent volatility (vol_window_days) times
    the weekday profile of the days ahead.

    Crypto closes move less over the weekend: a Friday-to-Saturday day is calmer than a Sunday-to-Monday one.
    Weekly origins all fall on one weekday, so without the profile a 1-day quantile learnt on Fridays would be
    too narrow for a forecast made on a Sunday. The profile is each weekday's mean squared log return over the
    364 days up to the origin, relative to all days'; a horizon's scale uses the mean profile of its days.
    """
    r = np.diff(np.log(y))  # r[t - 1] is the move into day t
    day_of = weekday(ds[1:])
    base = volatility(y, cut_idx, options.vol_window_days)
    hs = np.arange(1, options.horizon_days + 1)
    out = np.empty((len(cut_idx), len(hs)))
    for i, c in enumerate(cut_idx):
        lo = max(0, c - PROFILE_DAYS)
        moves, days = r[lo:c] ** 2, day_of[lo:c]
        overall = moves.mean() if moves.size else 0.0
        profile = np.ones(7)
        for w in range(7):
            own = moves[days == w]
            if own.size >= 4 and overall > 0:
                profile[w] = own.mean() / overall
        ahead = profile[weekday(ds[c] + hs)]
        out[i] = base[i] * np.sqrt(np.cumsum(ahead) / hs)
    return out


def predictions_frame(
    series: Series,
    cut_idx: np.ndarray,
    folds: Sequence[tuple[dict[str, np.ndarray], dict[str, str], np.datetime64]],
    options: ForecastOptions,
) -> pl.DataFrame:
    """Long rows (model, origin, horizon) with the actual where it is observed (null past the history)."""
    horizons = np.arange(1, options.horizon_days + 1)
    n = len(series.y)
    scale = interval_scales(series.ds, series.y, cut_idx, options)
    frames = []
    for model in options.models:
        target = (cut_idx[:, None] + horizons[None, :]).ravel()
        inside = target < n
        y = np.where(inside, series.y[np.minimum(target, n - 1)], np.nan)
        frames.append(
            pl.DataFrame(
                {
                    "symbol": [series.symbol] * target.size,
                    "model": [model] * target.size,
                    "cutoff": np.repeat(series.ds[cut_idx], len(horizons)),
                    "horizon": np.tile(horizons, len(cut_idx)),
                    "ds": np.repeat(series.ds[cut_idx], len(horizons)) + np.tile(horizons, len(cut_idx)),
                    "y": y,
                    "yhat": np.concatenate([f[0][model] for f in folds]),
                    "scale": scale.ravel(),
                    "train_end": np.repeat(np.array([f[2] for f in folds], dtype="datetime64[D]"), len(horizons)),
                },
                schema=PREDICTIONS_SCHEMA,
            ).with_columns(pl.col("y").fill_nan(None))
        )
    return pl.concat(frames)


def cross_validate(
    history: pl.DataFrame,
    options: ForecastOptions = DEFAULT_OPTIONS,
    *,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> CVResult:
    """Rolling-origin CV of options.models; returns the predictions and per-(model, horizon) metrics with the
    skill's bootstrap interval, the conformal quantiles, their honest coverage and the champion per horizon."""
    series = to_series(history, require_positive=options.log_price)
    cut_idx = cutoff_indices(len(series.ds), options)
    folds = fold_paths(series, cut_idx, options, executor, progress)
    predictions = predictions_frame(series, cut_idx, folds, options)
    errors = tuple(sorted({f"{m}: {e}" for f in folds for m, e in f[1].items()}))
    return CVResult(
        predictions, evaluate(predictions, options), len(cut_idx), full_cutoff_count(options, len(series.ds)), errors
    )
