"""A lake holding given daily closes, for the tests and the benchmark of the forecast graph."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from crypto_assets.asset_names import DAILY_RAW
from crypto_assets.batch.pipeline import build_daily_filled, build_prophet_input
from crypto_assets.forecast.csv_input import read_daily_csv
from crypto_assets.lake.datasets import write_months
from crypto_assets.lake.layout import months_between
from crypto_assets.schema import DAILY_SCHEMA


def write_daily_lake(lake: Path, closes: dict[str, tuple[date, np.ndarray]], symbols: list[str]) -> None:
    """daily_raw holds the given consecutive daily closes (OHLC = close), then daily_filled and prophet_input are
    built from it by the batch layer's own functions."""
    frames = []
    for symbol, (start, close) in closes.items():
        days = pl.date_range(start, start + (len(close) - 1) * pl.duration(days=1), "1d", eager=True)
        frames.append(
            pl.DataFrame({"symbol": symbol, "date": days, "close": np.asarray(close, dtype=float)}).with_columns(
                *[pl.col("close").alias(c) for c in ("open", "high", "low")],
                pl.lit(1.0).alias("volume"),
                pl.lit(1440, dtype=pl.UInt32).alias("minute_count"),
            )
        )
    daily = pl.concat(frames, how="diagonal").sort("symbol", "date").select(DAILY_SCHEMA.names())
    start, end = date(daily["date"].min().year, daily["date"].min().month, 1), date.today().replace(day=1)
    end = date(end.year + (end.month == 12), end.month % 12 + 1, 1)
    write_months(daily, lake, DAILY_RAW, "date", symbols, months_between(start, end))
    build_daily_filled(lake, symbols, start, end)
    build_prophet_input(lake, symbols, start, end)


def read_closes(path: str | os.PathLike[str]) -> tuple[date, np.ndarray]:
    """First day and the closes of an exchange daily CSV (consecutive days, as the exchange writes them)."""
    frame = read_daily_csv(path)
    return frame["ds"][0], frame["y"].to_numpy()
