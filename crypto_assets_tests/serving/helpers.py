"""Tiny tables and real lake files for the serving tests: batch views written the batch layer's way, and
micro-batches written in the speed layer's contract layout with its own log helpers."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_assets.asset_names import DAILY_FILLED, DAILY_RAW, MINUTE_RAW
from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.batch.transforms.filled import daily_filled
from crypto_assets.lake.atomic import write_parquet_atomic
from crypto_assets.lake.datasets import write_months
from crypto_assets.lake.layout import months_between
from crypto_assets.lake.microbatch_log import (
    CANDLES_1M,
    DAILY,
    SPEED_CANDLE_SCHEMA,
    SPEED_DAILY_SCHEMA,
    BatchRecord,
    append_record,
    batch_file,
)
from crypto_assets.schema import DAILY_SCHEMA, MINUTE_SCHEMA


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def minute_rows(symbol: str, start: datetime, count: int, price: float, step: float = 0.0) -> pl.DataFrame:
    """``count`` one-minute candles from ``start``; close moves by ``step`` per minute."""
    closes = [price + step * i for i in range(count)]
    return pl.DataFrame(
        {
            "symbol": [symbol] * count,
            "open_time": [start + timedelta(minutes=i) for i in range(count)],
            "open": closes,
            "high": [c + 1.0 for c in closes],
            "low": [c - 1.0 for c in closes],
            "close": closes,
            "volume": [1.0] * count,
        },
        schema=MINUTE_SCHEMA,
    )


def daily_minutes(symbol: str, days: list[date], closes: list[float], per_day: int = 3) -> pl.DataFrame:
    """A few minutes per day whose last close is the given one (so the daily close is known by hand)."""
    frames = [
        minute_rows(symbol, utc(d.year, d.month, d.day), per_day, close) for d, close in zip(days, closes, strict=True)
    ]
    return pl.concat(frames)


def write_batch_layer(lake: Path, minutes: pl.DataFrame, written: datetime) -> None:
    """minute_raw, daily_raw and daily_filled as the batch layer writes them, stamped as written at ``written``."""
    symbols = minutes["symbol"].unique().to_list()
    first = minutes["open_time"].min()
    end = minutes["open_time"].max() + timedelta(days=1)
    months = months_between(first, end)
    daily = aggregate_daily(minutes.lazy()).collect()
    filled = daily_filled(daily.lazy()).collect()
    summaries = [
        write_months(minutes.sort("symbol", "open_time"), lake, MINUTE_RAW, "open_time", symbols, months),
        write_months(daily, lake, DAILY_RAW, "date", symbols, months),
        write_months(filled, lake, DAILY_FILLED, "date", symbols, months),
    ]
    stamp = written.timestamp()
    for summary in summaries:
        for path in summary.files:
            os.utime(path, (stamp, stamp))


def speed_candles(minutes: pl.DataFrame, batch_id: int, event_time: datetime, closed: bool = True) -> pl.DataFrame:
    return minutes.with_columns(
        pl.lit(closed).alias("is_closed"),
        pl.lit(event_time, SPEED_CANDLE_SCHEMA["event_time"]).alias("event_time"),
        pl.lit(batch_id, pl.Int64).alias("batch_id"),
    ).select(SPEED_CANDLE_SCHEMA.names())


def speed_daily(candles: pl.DataFrame, batch_id: int) -> pl.DataFrame:
    daily = aggregate_daily(candles.select(MINUTE_SCHEMA.names()).lazy()).collect()
    events = candles.group_by("symbol", pl.col("open_time").dt.date().alias("date")).agg(pl.col("event_time").max())
    return (
        daily.join(events, on=["symbol", "date"])
        .with_columns(pl.lit(batch_id, pl.Int64).alias("batch_id"))
        .select(SPEED_DAILY_SCHEMA.names())
    )


def write_microbatch(lake: Path, batch_id: int, candles: pl.DataFrame, committed: datetime) -> BatchRecord:
    """One committed micro-batch: both dataset files first, then its log line (the contract's order)."""
    daily = speed_daily(candles, batch_id)
    write_parquet_atomic(candles, batch_file(lake, CANDLES_1M, batch_id))
    write_parquet_atomic(daily, batch_file(lake, DAILY, batch_id))
    record = BatchRecord(
        batch_id=batch_id,
        committed_at=committed.isoformat(),
        offsets={"crypto.klines": {"0": [batch_id, batch_id + 1]}},
        rows={CANDLES_1M: candles.height, DAILY: daily.height},
        min_event_time=candles["event_time"].min().isoformat() if candles.height else None,
        max_event_time=candles["event_time"].max().isoformat() if candles.height else None,
    )
    append_record(lake, record, now=committed)
    return record


def daily_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row")
