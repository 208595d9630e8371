"""Point and interval error metrics, and their per-(model, horizon) summary.

MAPE is a fraction (0.05 = 5%), the same unit as ForecastOptions.mape_warn_threshold.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from crypto_assets.forecast.baselines import NAIVE

PREDICTION_COLUMNS = ("model", "cutoff", "horizon", "y", "yhat", "yhat_lower", "yhat_upper")


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(yhat))))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(yhat)) ** 2)))


def mape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Mean |error| / |y|; raises on y == 0 where the ratio is undefined."""
    y = np.asarray(y, dtype=float)
    if (y == 0).any():
        raise ValueError("MAPE is undefined when y == 0")
    return float(np.mean(np.abs(y - np.asarray(yhat)) / np.abs(y)))


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of y inside the closed interval [lower, upper].

    Closed, so a zero-width interval on an exactly forecast value counts as covered.
    """
    y = np.asarray(y)
    return float(np.mean((y >= np.asarray(lower)) & (y <= np.asarray(upper))))


def _metric_exprs() -> list[pl.Expr]:
    err = pl.col("y") - pl.col("yhat")
    return [
        pl.len().alias("n"),
        err.abs().mean().alias("mae"),
        (err**2).mean().sqrt().alias("rmse"),
        # Mirrors mape(): y == 0 gives inf, which summarize() rejects.
        (err.abs() / pl.col("y").abs()).mean().alias("mape"),
        pl.col("y").is_between(pl.col("yhat_lower"), pl.col("yhat_upper"), closed="both").mean().alias("coverage"),
    ]


def summarize(predictions: pl.DataFrame, baseline: str = NAIVE) -> pl.DataFrame:
    """Per-(model, horizon) metrics from a long predictions table.

    Grouped by symbol too when a `symbol` column is present. `skill` is
    1 - MAPE_model / MAPE_baseline at the same horizon; null where the baseline's
    MAPE is 0 (a perfectly predictable series), since the ratio is undefined.
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions missing columns {missing}")
    if (predictions["y"] == 0).any():
        raise ValueError("MAPE is undefined when y == 0")
    keys = (["symbol"] if "symbol" in predictions.columns else []) + ["model", "horizon"]
    per = predictions.group_by(keys).agg(_metric_exprs())
    base = per.filter(pl.col("model") == baseline).select(
        *[k for k in keys if k != "model"], pl.col("mape").alias("_base_mape")
    )
    join_keys = [k for k in keys if k != "model"]
    return (
        per.join(base, on=join_keys, how="left")
        .with_columns(
            pl.when(pl.col("_base_mape") > 0)
            .then(1.0 - pl.col("mape") / pl.col("_base_mape"))
            .otherwise(None)
            .alias("skill")
        )
        .drop("_base_mape")
        .sort(keys)
    )


def flag_mape(metrics: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Add `mape_warn`: MAPE above the threshold (e.g. for Dagster metadata/warnings)."""
    return metrics.with_columns((pl.col("mape") > threshold).alias("mape_warn"))
