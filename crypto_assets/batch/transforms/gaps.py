"""Missing minute ranges: where a symbol has no candle inside the span it is expected to cover.

Pure functions over Polars LazyFrames. Ranges are half-open ``[gap_start, gap_end)`` on the minute grid;
``minutes`` is their length.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

MINUTE = timedelta(minutes=1)
TIME = pl.Datetime("us", "UTC")

RANGE_SCHEMA = pl.Schema({"symbol": pl.String, "gap_start": TIME, "gap_end": TIME, "minutes": pl.Int64})


def range_minutes(start: pl.Expr, end: pl.Expr) -> pl.Expr:
    return (end - start).dt.total_minutes().cast(pl.Int64)


def missing_ranges(minutes: pl.LazyFrame, spans: pl.LazyFrame) -> pl.LazyFrame:
    """Ranges of each span with no candle, sorted by symbol and start.

    ``minutes`` has ``symbol`` and ``open_time`` (duplicates allowed, order free); ``spans`` has ``symbol``,
    ``span_start`` and ``span_end`` (exclusive), several per symbol allowed as long as they do not overlap.
    A span without any candle is one whole gap.
    """
    spans = (
        spans.select("symbol", "span_start", "span_end")
        .filter(pl.col("span_end") > pl.col("span_start"))
        .sort("symbol", "span_start")
        .with_row_index("span")
    )
    # Sorting by time alone is several times cheaper than by (symbol, time); the per-span windows below keep
    # each symbol's times in that order.
    times = (
        minutes.select("symbol", "open_time")
        .sort("open_time")
        .join_asof(
            spans, left_on="open_time", right_on="span_start", by="symbol", strategy="backward", check_sortedness=False
        )
        .filter(pl.col("open_time") < pl.col("span_end"))
        .select("span", "symbol", "open_time")
        .cache()
    )
    interior = (
        times.with_columns(pl.col("open_time").shift(1).over("span").alias("previous"))
        .filter(pl.col("open_time") - pl.col("previous") > MINUTE)
        .select("symbol", (pl.col("previous") + MINUTE).alias("gap_start"), pl.col("open_time").alias("gap_end"))
    )
    ends = spans.join(
        times.group_by("span").agg(pl.col("open_time").min().alias("first"), pl.col("open_time").max().alias("last")),
        on="span",
        how="left",
    )
    leading = ends.select(
        "symbol",
        pl.col("span_start").alias("gap_start"),
        pl.col("first").fill_null(pl.col("span_end")).alias("gap_end"),
    )
    trailing = ends.filter(pl.col("last").is_not_null()).select(
        "symbol", (pl.col("last") + MINUTE).alias("gap_start"), pl.col("span_end").alias("gap_end")
    )
    return (
        pl.concat([leading, interior, trailing])
        .filter(pl.col("gap_end") > pl.col("gap_start"))
        .with_columns(range_minutes(pl.col("gap_start"), pl.col("gap_end")).alias("minutes"))
        .sort("symbol", "gap_start")
        .cast(dict(RANGE_SCHEMA))
    )


def gaps_between_sorted(minutes: pl.LazyFrame) -> pl.LazyFrame:
    """The ranges between consecutive candles of each symbol, for minutes already in (symbol, open_time) order
    without duplicates (the master dataset's own order): one pass, no sort, no grouping. The same ranges as
    :func:`missing_ranges` over each symbol's first to last candle."""
    previous = pl.col("open_time").shift(1)
    same_symbol = pl.col("symbol") == pl.col("symbol").shift(1)
    return (
        minutes.select("symbol", "open_time")
        .with_columns((previous + MINUTE).alias("gap_start"), same_symbol.alias("_same"))
        .filter(pl.col("_same") & (pl.col("open_time") > pl.col("gap_start")))
        .select("symbol", "gap_start", pl.col("open_time").alias("gap_end"))
        .with_columns(range_minutes(pl.col("gap_start"), pl.col("gap_end")).alias("minutes"))
        .cast(dict(RANGE_SCHEMA))
    )


def merge_ranges(ranges: pl.LazyFrame, by: tuple[str, ...] = ()) -> pl.LazyFrame:
    """Overlapping or touching ranges of a symbol (and of the ``by`` columns) joined into one."""
    keys = ["symbol", *by]
    reach = pl.col("gap_end").cum_max().shift(1).over(keys)
    return (
        ranges.sort(*keys, "gap_start")
        .with_columns((pl.col("gap_start") > reach).fill_null(True).cum_sum().alias("_run"))
        .group_by(*keys, "_run")
        .agg(pl.col("gap_start").min(), pl.col("gap_end").max())
        .with_columns(range_minutes(pl.col("gap_start"), pl.col("gap_end")).alias("minutes"))
        .select(*keys, "gap_start", "gap_end", "minutes")
        .sort(*keys, "gap_start")
    )
