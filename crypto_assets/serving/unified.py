"""The unified view as pure transforms: closed days from the batch view, the rest from the speed layer.

A batch day is *closed* once the batch layer wrote it after the day ended (its ``as_of`` is at or past the
next midnight); the seam is the last closed day. Closed days are the batch view's rows unchanged. Later
days are rebuilt from minutes, one per (symbol, minute) by :data:`PRECEDENCE`: a closed candle beats an
unclosed one from either layer, the stream's wins among closed ones, and a partial minute the stream can no
longer finish (older than its watermark, e.g. the producer died mid-minute) gives way to the batch layer's.
Minutes only the batch layer holds (e.g. the morning before the stream started) top the stream up. The
calendar is then forward-filled and MA7/MA30 recomputed over the whole series with the batch layer's own
transforms, so the averages run continuously across the seam.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.batch.transforms.filled import add_moving_averages, fill_calendar
from crypto_assets.schema import DAILY_SCHEMA, FILLED_SCHEMA, MINUTE_SCHEMA

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


# Which version of a minute the unified view keeps, best first: speed closed, batch closed, speed unclosed,
# batch unclosed, speed unclosed older than the watermark. A closed candle is final (the exchange's own); a
# partial one is only worth keeping while the stream can still complete it.
SPEED_CLOSED, BATCH_CLOSED, SPEED_OPEN, BATCH_OPEN, SPEED_STALE = range(5)


def minute_end(open_time: pl.Expr) -> pl.Expr:
    return open_time + pl.duration(minutes=1)


def running_minutes(
    speed_candles: pl.LazyFrame,
    batch_minutes: pl.LazyFrame,
    seam: date | None,
    watermark_delay: timedelta = timedelta(0),
) -> pl.LazyFrame:
    """Minutes of the days after the seam, one per (symbol, open_time), chosen by :data:`PRECEDENCE`.

    ``speed_candles`` are the speed layer's 1-minute candles (any number of micro-batches; the newest
    version of each minute stands for the stream); ``batch_minutes`` are minute_raw rows with an ``as_of``
    column, closed when written after the minute ended. The stream's watermark per symbol is its newest event
    time less ``watermark_delay`` (the stream job's ``stream.watermark``): the stream drops events older than
    that, so an unclosed minute that ended before it will never be completed.
    """
    columns = MINUTE_SCHEMA.names()
    watermark = pl.col("event_time").max().over("symbol") - pl.lit(watermark_delay)
    speed = (
        latest_per_key(speed_candles.with_columns(watermark.alias("watermark")), CANDLE_KEY)
        .with_columns(
            pl.when(pl.col("is_closed"))
            .then(pl.lit(SPEED_CLOSED))
            .when(minute_end(pl.col("open_time")) <= pl.col("watermark"))
            .then(pl.lit(SPEED_STALE))
            .otherwise(pl.lit(SPEED_OPEN))
            .alias("rank")
        )
        .select(*columns, pl.col("event_time").alias("as_of"), pl.lit(SPEED).alias("source"), "rank")
    )
    batch = batch_minutes.select(
        *columns,
        pl.col("as_of").cast(AS_OF),
        pl.lit(BATCH).alias("source"),
        pl.when(pl.col("as_of") >= minute_end(pl.col("open_time")))
        .then(pl.lit(BATCH_CLOSED))
        .otherwise(pl.lit(BATCH_OPEN))
        .alias("rank"),
    )
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
    owner = (
        pl.lit(SPEED) if seam is None else pl.when(pl.col("date") <= seam).then(pl.lit(BATCH)).otherwise(pl.lit(SPEED))
    )
    # A filled day belongs to the layer that owns its date and is as fresh as the close it carries.
    return add_moving_averages(
        calendar.with_columns(pl.col("source").fill_null(owner), pl.col("as_of").forward_fill().over("symbol"))
    ).select(UNIFIED_SCHEMA.names())
