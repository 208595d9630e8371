"""A continuous daily calendar per symbol, forward-filled, with 7- and 30-day moving averages of close."""

from __future__ import annotations

from datetime import date

import polars as pl

from crypto_assets.schema import FILLED_SCHEMA, MA_WINDOWS, PRICES


def fill_calendar(daily: pl.LazyFrame, through: date | None = None) -> pl.LazyFrame:
    """Every day from a symbol's first candle to its last (or ``through``), missing days flagged.

    A missing day carries the previous close as open, high, low and close, with zero volume: the price
    did not move as far as we know, and nothing traded that we saw.
    """
    bounds = daily.group_by("symbol").agg(
        pl.col("date").min().alias("first"),
        (pl.lit(through, dtype=pl.Date) if through else pl.col("date").max()).alias("last"),
    )
    calendar = bounds.select("symbol", pl.date_ranges("first", "last", interval="1d").alias("date")).explode("date")
    joined = calendar.join(daily, on=["symbol", "date"], how="left").sort("symbol", "date")
    is_filled = pl.col("close").is_null()
    carried = pl.col("close").forward_fill().over("symbol")
    return joined.with_columns(
        is_filled.alias("is_filled"),
        *[pl.col(c).fill_null(carried) for c in PRICES],
        pl.col("volume").fill_null(0.0),
        pl.col("minute_count").fill_null(0),
    )


def window_mean(values: pl.Expr, size: int) -> pl.Expr:
    """Mean of the last ``size`` values, null until a full window exists.

    Always the same float steps, so every engine gets the same bits: the window's values added from the oldest
    to the newest, times 1/size (a rolling mean's running sum, and a division by a constant, which Polars
    turns into a product, depend on the engine).
    """
    total = values.shift(size - 1)
    for lag in range(size - 2, -1, -1):
        total = total + values.shift(lag)
    return total * (1.0 / size)


def add_moving_averages(filled: pl.LazyFrame) -> pl.LazyFrame:
    """Simple moving averages of close over the continuous calendar; null until a full window exists."""
    return filled.sort("symbol", "date").with_columns(
        window_mean(pl.col("close"), size).over("symbol").alias(name) for name, size in MA_WINDOWS.items()
    )


def daily_filled(daily: pl.LazyFrame, through: date | None = None) -> pl.LazyFrame:
    return add_moving_averages(fill_calendar(daily, through)).select(FILLED_SCHEMA.names())
