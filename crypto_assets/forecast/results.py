"""The "forecast_results" table (actuals next to predictions) and its writers."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import atomic_target, write_parquet_atomic
from crypto_assets.lake.location import lake_root

BAND_COLUMNS = ("lower_80", "upper_80", "lower_95", "upper_95")
RESULTS_SCHEMA = {
    "symbol": pl.String,
    "ds": pl.Date,
    "y": pl.Float64,
    "model": pl.String,  # the served model of that day ahead (the champion of its horizon by CV)
    "yhat": pl.Float64,
    **{c: pl.Float64 for c in BAND_COLUMNS},
    "prophet_yhat": pl.Float64,
    "naive_yhat": pl.Float64,
    "is_forecast": pl.Boolean,
}


def actual_vs_predicted(history: pl.DataFrame, forecasts: pl.DataFrame) -> pl.DataFrame:
    """One row per day of history (the actual y) and per day ahead (the served forecast with its bands, and
    Prophet's and naive's forecasts beside it), ordered by symbol, ds."""
    actual = history.select("symbol", "ds", pl.col("y").cast(pl.Float64))
    served = forecasts.filter(pl.col("served")).select("symbol", "ds", "model", "yhat", *BAND_COLUMNS)
    beside = [
        forecasts.filter(pl.col("model") == name).select("symbol", "ds", pl.col("yhat").alias(f"{name}_yhat"))
        for name in ("prophet", "naive")
    ]
    future = served
    for frame in beside:
        future = future.join(frame, on=["symbol", "ds"], how="left")
    return (
        pl.concat([actual, future], how="diagonal_relaxed")
        .with_columns(pl.col("model").is_not_null().alias("is_forecast"))
        .select(
            [
                pl.col(c)
                if c in ("symbol", "ds", "y", "model", "yhat", "is_forecast") or c in future.columns
                else pl.lit(None).alias(c)
                for c in RESULTS_SCHEMA
            ]
        )
        .cast(RESULTS_SCHEMA)
        .sort("symbol", "ds")
    )


def write_parquet(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Atomic Parquet write (the lake's writer: fixed settings, byte-identical on re-runs)."""
    target = lake_root(path)
    write_parquet_atomic(df, target)
    return target


def write_csv(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Atomic CSV write: a temporary file beside the target, then one rename (on object storage, one PUT)."""
    target = lake_root(path)
    with atomic_target(target) as tmp:
        df.write_csv(tmp)
    return target
