"""Build a `prophet_input`-shaped frame from a Binance daily kline CSV.

For tests and benchmarks; in the asset graph prophet_input comes from upstream.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl


def read_daily_csv(path: str | os.PathLike[str], symbol: str | None = None) -> pl.DataFrame:
    """ds (Date), y (close), symbol from `timestamp,open,high,low,close,volume` rows.

    symbol defaults to the file-name prefix (BTCUSDT_1d.csv -> BTCUSDT). Missing
    days are forward-filled so the result meets the continuous-days contract.
    """
    p = Path(path)
    sym = symbol or p.name.split("_")[0]
    raw = pl.read_csv(p, schema_overrides={"timestamp": pl.String})
    daily = (
        raw.select(
            pl.col("timestamp").str.slice(0, 10).str.to_date("%Y-%m-%d").alias("ds"),
            pl.col("close").cast(pl.Float64).alias("y"),
        )
        .unique("ds", keep="last")
        .sort("ds")
    )
    days = pl.date_range(daily["ds"].min(), daily["ds"].max(), "1d", eager=True).alias("ds")
    return (
        pl.DataFrame(days)
        .join(daily, on="ds", how="left")
        .with_columns(pl.col("y").forward_fill(), pl.lit(sym).alias("symbol"))
        .select("ds", "y", "symbol")
    )


def write_daily_lake(lake: Path, closes: dict[str, tuple[date, np.ndarray]], symbols: list[str]) -> None:
    """A lake whose daily_raw holds the given consecutive daily closes (OHLC = close), then daily_filled and
    prophet_input built from it by the batch layer's own functions: for benches and tests of the forecast graph."""
    from crypto_assets.asset_names import DAILY_RAW
    from crypto_assets.batch.pipeline import build_daily_filled, build_prophet_input
    from crypto_assets.lake.datasets import write_months
    from crypto_assets.lake.layout import months_between
    from crypto_assets.schema import DAILY_SCHEMA

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
