"""The "forecast_results" table (actuals next to predictions) and its writers."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import atomic_target, write_parquet_atomic

RESULTS_SCHEMA = {
    "symbol": pl.String,
    "ds": pl.Date,
    "y": pl.Float64,
    "yhat": pl.Float64,
    "yhat_lower": pl.Float64,
    "yhat_upper": pl.Float64,
    "is_forecast": pl.Boolean,
}


def actual_vs_predicted(history: pl.DataFrame, forecast: pl.DataFrame) -> pl.DataFrame:
    """One row per day of history and forecast, ordered by symbol, ds.

    y is null on future days; yhat is null on history days that the forecast
    has no fitted value for (forecast made without include_history).
    """
    actual = history.select("symbol", "ds", pl.col("y").cast(pl.Float64))
    pred = forecast.select("symbol", "ds", "yhat", "yhat_lower", "yhat_upper")
    joined = actual.join(pred, on=["symbol", "ds"], how="full", coalesce=True)
    # History has no null y, so a day without an actual is a day past the history.
    return (
        joined.with_columns(pl.col("y").is_null().alias("is_forecast"))
        .select(list(RESULTS_SCHEMA))
        .cast(RESULTS_SCHEMA)
        .sort("symbol", "ds")
    )


def write_parquet(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Atomic Parquet write (the lake's writer: fixed settings, byte-identical on re-runs)."""
    target = Path(path)
    write_parquet_atomic(df, target)
    return target


def write_csv(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Atomic CSV write: a temporary file beside the target, then one rename."""
    target = Path(path)
    with atomic_target(target) as tmp:
        df.write_csv(tmp)
    return target
