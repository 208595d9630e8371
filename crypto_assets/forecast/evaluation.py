"""Scores of the CV predictions: point metrics, skill with a bootstrap interval, conformal intervals with their
honest coverage, and the champion per horizon.

Conformal intervals: a fold's score is |log(y / yhat)| / scale, where scale is the volatility of the daily log
returns before its origin weighted by the weekdays ahead (cross_validation.interval_scales); the band at level L is yhat * exp(+-q_L * scale), q_L the conformal quantile of the
scores at that horizon. Their coverage is measured honestly: each origin's band uses only the scores of earlier
folds whose target was already observed at that origin.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from crypto_assets.forecast.baselines import NAIVE
from crypto_assets.forecast.options import ForecastOptions

# Fewest calibration scores an origin needs before its band counts towards the measured coverage.
MIN_CALIBRATION = 20
SKILL_CI = 0.95


def level_tag(level: float) -> str:
    """80 for 0.8: the suffix of lower_80, q_80, coverage_80."""
    return f"{level * 100:g}"


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil((n + 1) * level)-th smallest score (split conformal); the largest when n is too small for it."""
    s = np.sort(scores[np.isfinite(scores)])
    if s.size == 0:
        return math.nan
    k = min(math.ceil((s.size + 1) * level), s.size)
    return float(s[k - 1])


def bands(yhat: np.ndarray, scale: np.ndarray | float, q: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    half = np.asarray(q) * np.asarray(scale)
    return yhat * np.exp(-half), yhat * np.exp(half)


def block_bootstrap_indices(n: int, block: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """(samples, n) origin indices of a circular block bootstrap: overlapping forecast paths are resampled together."""
    block = max(1, min(block, n))
    n_blocks = math.ceil(n / block)
    starts = rng.integers(0, n, size=(samples, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]) % n
    return idx.reshape(samples, -1)[:, :n]


def _grid(predictions: pl.DataFrame, model: str, column: str, origins: int, horizons: int) -> np.ndarray:
    rows = predictions.filter(pl.col("model") == model).sort("cutoff", "horizon")
    return rows[column].cast(pl.Float64).to_numpy().reshape(origins, horizons)


def honest_coverage(scores: np.ndarray, cut_day: np.ndarray, horizon: int, level: float) -> tuple[float, int]:
    """Coverage of bands whose quantile comes from earlier folds already observed at each origin."""
    hits = []
    for i in range(len(scores)):
        known = cut_day + horizon <= cut_day[i]
        if known.sum() < MIN_CALIBRATION or not np.isfinite(scores[i]):
            continue
        hits.append(scores[i] <= conformal_quantile(scores[known], level))
    return (float(np.mean(hits)) if hits else math.nan), len(hits)


def evaluate(predictions: pl.DataFrame, options: ForecastOptions) -> pl.DataFrame:
    """One row per (model, horizon 1..horizon_days); `served` marks the champion's rows (see champions())."""
    observed = predictions.filter(pl.col("y").is_not_null())
    cutoffs = observed["cutoff"].unique().sort()
    n_o, n_h = cutoffs.len(), options.horizon_days
    cut_day = cutoffs.to_numpy().astype("datetime64[D]").astype(np.int64)
    models = [m for m in options.models if m in set(observed["model"].to_list())]
    y = _grid(observed, NAIVE, "y", n_o, n_h)
    scale = _grid(observed, NAIVE, "scale", n_o, n_h)
    ape = {m: np.abs(y - _grid(observed, m, "yhat", n_o, n_h)) / y for m in models}
    rng = np.random.default_rng(0)
    boot = {
        h: block_bootstrap_indices(n_o, math.ceil(h / options.cv_period_days), options.bootstrap_samples, rng)
        for h in range(1, n_h + 1)
    }
    rows = []
    for m in models:
        yhat = _grid(observed, m, "yhat", n_o, n_h)
        err = y - yhat
        score = np.abs(np.log(y / yhat)) / scale
        q = {
            lv: np.fmax.accumulate([conformal_quantile(score[:, j], lv) for j in range(n_h)])
            for lv in options.interval_levels
        }
        for j, h in enumerate(range(1, n_h + 1)):
            mape, base = float(np.mean(ape[m][:, j])), float(np.mean(ape[NAIVE][:, j]))
            idx = boot[h]
            with np.errstate(divide="ignore", invalid="ignore"):
                skills = 1.0 - ape[m][idx, j].mean(axis=1) / ape[NAIVE][idx, j].mean(axis=1)
            finite = np.isfinite(skills)
            lo, hi = (
                np.quantile(skills[finite], [(1 - SKILL_CI) / 2, (1 + SKILL_CI) / 2])
                if finite.all() and base > 0
                else (math.nan, math.nan)
            )
            row = {
                "model": m,
                "horizon": h,
                "n": n_o,
                "mae": float(np.mean(np.abs(err[:, j]))),
                "rmse": float(np.sqrt(np.mean(err[:, j] ** 2))),
                "mape": mape,
                "skill": 1.0 - mape / base if base > 0 else None,
                "skill_lo": float(lo),
                "skill_hi": float(hi),
            }
            for lv in options.interval_levels:
                cov, n_cov = honest_coverage(score[:, j], cut_day, h, lv)
                row[f"q_{level_tag(lv)}"] = float(q[lv][j])
                row[f"coverage_{level_tag(lv)}"] = cov
                row["coverage_n"] = n_cov
            rows.append(row)
    metrics = pl.DataFrame(rows).with_columns(
        pl.lit(str(predictions["symbol"][0])).alias("symbol"),
        pl.col("horizon").cast(pl.Int32),
        pl.col("n").cast(pl.Int64),
        *[pl.col(c).cast(pl.Float64).fill_nan(None) for c in ("mape", "skill", "skill_lo", "skill_hi")],
    )
    served = champions(metrics, options)
    return (
        metrics.with_columns(
            pl.struct("model", "horizon")
            .map_elements(lambda r: served[r["horizon"]] == r["model"], return_dtype=pl.Boolean)
            .alias("served")
        )
        .select("symbol", pl.exclude("symbol"))
        .sort("model", "horizon")
    )


def champions(metrics: pl.DataFrame, options: ForecastOptions) -> dict[int, str]:
    """Served model per day ahead 1..horizon_days.

    At each CV horizon the champion is the lowest-MAPE model among naive and the models whose skill's bootstrap
    interval lies above 0 (a model beats naive on evidence, not by a lucky year). Day d is served by the champion
    of the shortest CV horizon >= d.
    """
    best: dict[int, str] = {}
    for h in options.cv_horizons:
        rows = metrics.filter(pl.col("horizon") == h)
        eligible = rows.filter((pl.col("model") == NAIVE) | (pl.col("skill_lo").fill_null(-1.0) > 0)).filter(
            pl.col("mape").is_not_null()
        )
        order = {m: i for i, m in enumerate(options.models)}
        ranked = sorted(eligible.iter_rows(named=True), key=lambda r: (r["mape"], order.get(r["model"], 99)))
        best[h] = ranked[0]["model"] if ranked else NAIVE
    return {d: best[min(h for h in options.cv_horizons if h >= d)] for d in range(1, options.horizon_days + 1)}


def served_models(metrics: pl.DataFrame) -> dict[int, str]:
    """The champion per day ahead as recorded in a metrics table."""
    return {int(h): str(m) for m, h in metrics.filter(pl.col("served")).select("model", "horizon").iter_rows()}
