"""Daily OHLCV per symbol and UTC day from clean 1-minute rows."""

from __future__ import annotations

import polars as pl

MINUTES_PER_DAY = 1440

DAILY_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "date": pl.Date,
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
        "minute_count": pl.UInt32,
    }
)


def aggregate_daily(minutes: pl.LazyFrame) -> pl.LazyFrame:
    """Open of the first minute, max high, min low, close of the last minute, summed volume.

    ``minute_count`` makes incomplete days visible instead of silently looking like full ones.
    """
    # min_by/max_by pick the first and last minute without sorting millions of minute rows.
    return (
        minutes.group_by("symbol", pl.col("open_time").dt.date().alias("date"))
        .agg(
            pl.col("open").min_by("open_time"),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").max_by("open_time"),
            pl.col("volume").sum(),
            pl.len().cast(pl.UInt32).alias("minute_count"),
        )
        .sort("symbol", "date")
        .select(DAILY_SCHEMA.names())
    )
