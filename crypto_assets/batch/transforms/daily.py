"""Daily OHLCV per symbol and UTC day from clean 1-minute rows."""

from __future__ import annotations

import polars as pl

from crypto_assets.schema import DAILY_SCHEMA

# A day's volume is summed exactly, so it does not depend on the order in which an engine adds the minutes
# up (Polars and Spark each add in their own order and would differ in the last bits). Each volume is split
# into its whole part and two 40-bit binary fractions; those integer sums are exact in any order, and are put
# back together by one fixed sequence of float operations. Bits below 2**-80 are dropped.
FRACTION_BITS = 40
FRACTION = 2**FRACTION_BITS
# Beyond this (or inf, NaN) the parts would overflow Int64 over a day; such days fall back to a plain sum.
EXACT_VOLUME_LIMIT = 2.0**52
VOLUME_PARTS = ("_volume_whole", "_volume_frac1", "_volume_frac2")


def split_volume(volume: pl.Expr) -> list[pl.Expr]:
    """Whole part and two 40-bit fraction digits of a volume, as Int64 (each step is exact in binary)."""
    whole = volume.floor()
    first = (volume - whole) * float(FRACTION)
    first_digit = first.floor()
    second_digit = ((first - first_digit) * float(FRACTION)).floor()
    return [
        part.cast(pl.Int64, strict=False).alias(name)
        for part, name in zip((whole, first_digit, second_digit), VOLUME_PARTS, strict=True)
    ]


def join_volume(whole: pl.Expr, first: pl.Expr, second: pl.Expr) -> pl.Expr:
    """The summed parts as one float: carries in integers, then always the same float steps."""
    first = first + second // FRACTION
    second = second - (second // FRACTION) * FRACTION
    whole = whole + first // FRACTION
    first = first - (first // FRACTION) * FRACTION
    fraction = first.cast(pl.Float64) * 2.0**-FRACTION_BITS + second.cast(pl.Float64) * 2.0 ** (-2 * FRACTION_BITS)
    return whole.cast(pl.Float64) + fraction


def aggregate_daily(minutes: pl.LazyFrame) -> pl.LazyFrame:
    """Open of the first minute, max high, min low, close of the last minute, exactly summed volume.

    ``minute_count`` makes incomplete days visible instead of silently looking like full ones.
    """
    # min_by/max_by pick the first and last minute without sorting millions of minute rows.
    exact = join_volume(*(pl.col(name) for name in VOLUME_PARTS))
    return (
        minutes.with_columns(split_volume(pl.col("volume")))
        .group_by("symbol", pl.col("open_time").dt.date().alias("date"))
        .agg(
            pl.col("open").min_by("open_time"),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").max_by("open_time"),
            pl.col(VOLUME_PARTS).sum(),
            (pl.col("volume").abs() < EXACT_VOLUME_LIMIT).all().alias("_volume_exact"),
            pl.col("volume").sum(),
            pl.len().cast(pl.UInt32).alias("minute_count"),
        )
        .with_columns(pl.when(pl.col("_volume_exact")).then(exact).otherwise(pl.col("volume")).alias("volume"))
        .sort("symbol", "date")
        .select(DAILY_SCHEMA.names())
    )
