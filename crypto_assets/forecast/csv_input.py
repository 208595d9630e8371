"""Build a `prophet_input`-shaped frame from a Binance daily kline CSV: the ``forecast --input`` command's
history (in the asset graph prophet_input comes from upstream).
"""

from __future__ import annotations

import os
from pathlib import Path

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
