"""Out-of-sample backtest of the served forecast, for the acceptance test and the forecast benchmark: model selection and calibration on the data up to
train_end (the CV a run on that day would make), then the frozen choice scored at weekly origins after it.

Every fold of both parts is computed by the same fold_paths (each trains on its own slice only), in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import date
from typing import NamedTuple

import numpy as np
import polars as pl

from crypto_assets.forecast.baselines import NAIVE
from crypto_assets.forecast.candidates import PROPHET
from crypto_assets.forecast.cross_validation import Progress, cutoff_indices, fold_paths, predictions_frame
from crypto_assets.forecast.evaluation import (
    SKILL_CI,
    bands,
    block_bootstrap_indices,
    evaluate,
    level_tag,
    served_models,
)
from crypto_assets.forecast.history import to_series
from crypto_assets.forecast.options import ForecastOptions


class Backtest(NamedTuple):
    selection: pl.DataFrame  # CV metrics on data up to train_end (what was served)
    test: pl.DataFrame  # per test origin and horizon: served model, yhat, bands, naive, prophet, y
    summary: pl.DataFrame  # per CV horizon


def backtest(
    history: pl.DataFrame,
    train_end: date,
    options: ForecastOptions,
    *,
    executor: Executor | None = None,
    progress: Progress | None = None,
    horizons: Sequence[int] | None = None,
) -> Backtest:
    series = to_series(history, require_positive=options.log_price)
    n_train = int(np.searchsorted(series.ds, np.datetime64(train_end, "D"), side="right"))
    selection_idx = cutoff_indices(n_train, options)
    test_idx = np.arange(n_train - 1, len(series.y) - options.horizon_days, options.cv_period_days)
    if test_idx.size == 0:
        raise ValueError(f"no test origin after {train_end} with {options.horizon_days} observed days after it")
    all_idx = np.concatenate([selection_idx, test_idx])
    folds = fold_paths(series, all_idx, options, executor, progress)
    predictions = predictions_frame(series, all_idx, folds, options)
    split = series.ds[n_train - 1]
    selection = evaluate(
        predictions.filter(pl.col("cutoff") <= split - np.timedelta64(options.horizon_days, "D")), options
    )
    served = served_models(selection)
    test = predictions.filter(pl.col("cutoff") >= split)
    hs = list(horizons or options.cv_horizons)
    rows = []
    for h in hs:
        model = served[h]
        at = test.filter(pl.col("horizon") == h)
        pick = at.filter(pl.col("model") == model).sort("cutoff")
        q = selection.filter((pl.col("model") == model) & (pl.col("horizon") == h))
        frame = pick.select("cutoff", "horizon", "ds", "y", "scale", pl.lit(model).alias("model"), "yhat")
        for lv in options.interval_levels:
            lower, upper = bands(frame["yhat"].to_numpy(), frame["scale"].to_numpy(), q[f"q_{level_tag(lv)}"][0])
            frame = frame.with_columns(
                pl.Series(f"lower_{level_tag(lv)}", lower), pl.Series(f"upper_{level_tag(lv)}", upper)
            )
        for other in (NAIVE, PROPHET):
            col = at.filter(pl.col("model") == other).sort("cutoff")["yhat"]
            frame = frame.with_columns(
                col.alias(f"{other}_yhat")
                if col.len() == frame.height
                else pl.lit(None, pl.Float64).alias(f"{other}_yhat")
            )
        rows.append(frame)
    test_frame = pl.concat(rows)
    return Backtest(selection, test_frame, summarize_test(test_frame, options))


def summarize_test(test: pl.DataFrame, options: ForecastOptions) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    out = []
    for (h,), part in test.sort("horizon", "cutoff").partition_by("horizon", as_dict=True, maintain_order=True).items():
        y = part["y"].to_numpy()
        ape = np.abs(y - part["yhat"].to_numpy()) / y
        ape_naive = np.abs(y - part["naive_yhat"].to_numpy()) / y
        ape_prophet = np.abs(y - part["prophet_yhat"].to_numpy()) / y
        idx = block_bootstrap_indices(len(y), math.ceil(h / options.cv_period_days), options.bootstrap_samples, rng)
        skills = 1.0 - ape[idx].mean(axis=1) / ape_naive[idx].mean(axis=1)
        lo, hi = np.quantile(skills, [(1 - SKILL_CI) / 2, (1 + SKILL_CI) / 2])
        row = {
            "horizon": int(h),
            "served_model": part["model"][0],
            "origins": len(y),
            "served_mape": float(ape.mean()),
            "naive_mape": float(ape_naive.mean()),
            "prophet_mape": float(np.nanmean(ape_prophet)),
            "skill": float(1.0 - ape.mean() / ape_naive.mean()),
            "skill_lo": float(lo),
            "skill_hi": float(hi),
        }
        for lv in options.interval_levels:
            tag = level_tag(lv)
            row[f"coverage_{tag}"] = float(
                np.mean((y >= part[f"lower_{tag}"].to_numpy()) & (y <= part[f"upper_{tag}"].to_numpy()))
            )
        out.append(row)
    return pl.DataFrame(out)
