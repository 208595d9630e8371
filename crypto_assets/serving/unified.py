"""The unified view as pure transforms: closed days from the batch view, the rest from the speed layer.

A batch day is *closed* once the batch layer wrote it after the day ended (its ``as_of`` is at or past the
next midnight); the seam is the last closed day. Closed days are the batch view's rows unchanged. Later
days are rebuilt from minutes: the speed layer's newest version of each minute, topped up with minutes the
batch layer holds that the stream never saw (e.g. the morning before the stream started). The calendar is
then forward-filled and MA7/MA30 recomputed over the whole series with the batch layer's own transforms, so
the averages run continuously across the seam.
"""

from __future__ import annotations

from datetime import date

import polars as pl

from crypto_assets.batch.transforms.daily import DAILY_SCHEMA, aggregate_daily
from crypto_assets.batch.transforms.filled import (
    FILLED_SCHEMA,
    add_moving_averages,
    fill_calendar,
)
from crypto_assets.batch.transforms.minute import MINUTE_SCHEMA

BATCH = "batch"
SPEED = "speed"
AS_OF = pl.Datetime("us", "UTC")

UNIFIED_SCHEMA = pl.Schema({**FILLED_SCHEMA, "source": pl.String, "as_of": AS_OF})

# Per-key "latest micro-batch wins" keys of the speed datasets.
CANDLE_KEY = ["symbol", "open_time"]
DAILY_KEY = ["symbol", "date"]


def day_end(day: pl.Expr) -> pl.Expr:
    """The UTC midnight that ends ``day``."""
    return day.cast(pl.Datetime("us")).dt.replace_time_zone("UTC") + pl.duration(days=1)


def is_closed() -> pl.Expr:
    """The batch layer wrote the day after it ended, so the day's row is final."""
    return pl.col("as_of") >= day_end(pl.col("date"))


def seam_of(batch_view: pl.LazyFrame) -> date | None:
    """The batch view's last closed day, or None when it has none."""
    return batch_view.filter(is_closed()).select(pl.col("date").max()).collect().item()


def after(seam: date | None, day: pl.Expr) -> pl.Expr:
    return pl.lit(True) if seam is None else day > seam


def latest_per_key(frame: pl.LazyFrame, key: list[str]) -> pl.LazyFrame:
    """One row per key: the one from the highest ``batch_id`` (a later micro-batch saw more of the market)."""
    return frame.sort([*key, "batch_id"]).unique(key, keep="last", maintain_order=True)


def running_minutes(speed_candles: pl.LazyFrame, batch_minutes: pl.LazyFrame, seam: date | None) -> pl.LazyFrame:
    """Minutes of the days after the seam, one per (symbol, open_time).

    ``speed_candles`` are the speed layer's 1-minute candles (any number of micro-batches);
    ``batch_minutes`` are minute_raw rows with an ``as_of`` column. The stream's newest version of a minute
    wins: on an open day it is the fresher source, and minutes both saw agree once closed.
    """
    columns = MINUTE_SCHEMA.names()
    speed = latest_per_key(speed_candles, CANDLE_KEY).select(
        *columns, pl.col("event_time").alias("as_of"), pl.lit(SPEED).alias("source"), pl.lit(0).alias("rank")
    )
    batch = batch_minutes.select(*columns, pl.col("as_of").cast(AS_OF), pl.lit(BATCH).alias("source"), pl.lit(1).alias("rank"))
    both = pl.concat([speed, batch]).filter(after(seam, pl.col("open_time").dt.date()))
    return both.sort([*CANDLE_KEY, "rank"]).unique(CANDLE_KEY, keep="first", maintain_order=True).drop("rank")


def running_days(minutes: pl.LazyFrame) -> pl.LazyFrame:
    """Daily candles of running minutes (the batch layer's aggregation), with their source and as-of.

    A day is the speed layer's when the stream contributed any minute of it.
    """
    provenance = minutes.group_by("symbol", pl.col("open_time").dt.date().alias("date")).agg(
        pl.when((pl.col("source") == SPEED).any()).then(pl.lit(SPEED)).otherwise(pl.lit(BATCH)).alias("source"),
        pl.col("as_of").max(),
    )
    return aggregate_daily(minutes.select(MINUTE_SCHEMA.names())).join(provenance, on=DAILY_KEY, how="left")


def unify(batch_view: pl.LazyFrame, running: pl.LazyFrame, seam: date | None) -> pl.LazyFrame:
    """The unified daily series.

    ``batch_view`` is daily_filled with ``as_of``; ``running`` is :func:`running_days` output. Batch rows up
    to the seam win; later days come from ``running``. Missing days anywhere are forward-filled (flagged
    ``is_filled``) and MA7/MA30 are recomputed over the continuous calendar.
    """
    kept = [*DAILY_SCHEMA.names(), "source", "as_of"]
    closed = (
        batch_view.filter(pl.lit(False) if seam is None else pl.col("date") <= seam)
        .filter(~pl.col("is_filled"))
        .with_columns(pl.lit(BATCH).alias("source"), pl.col("as_of").cast(AS_OF))
        .select(kept)
    )
    later = running.filter(after(seam, pl.col("date"))).select(kept)
    calendar = fill_calendar(pl.concat([closed, later]))
    owner = pl.lit(SPEED) if seam is None else pl.when(pl.col("date") <= seam).then(pl.lit(BATCH)).otherwise(pl.lit(SPEED))
    # A filled day belongs to the layer that owns its date and is as fresh as the close it carries.
    return add_moving_averages(
        calendar.with_columns(
            pl.col("source").fill_null(owner), pl.col("as_of").forward_fill().over("symbol")
        )
    ).select(UNIFIED_SCHEMA.names())
