"""Builders for synthetic inputs that follow the prophet_input / daily_filled contracts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAILY_DIR = REPO_ROOT.parent / "shared" / "data" / "binance_spot_1d"


def make_history(y: np.ndarray, symbol: str = "TEST", start: date = date(2020, 1, 1)) -> pl.DataFrame:
    ds = np.datetime64(start, "D") + np.arange(len(y))
    return pl.DataFrame(
        {"ds": ds, "y": np.asarray(y, dtype=float), "symbol": symbol},
        schema={"ds": pl.Date, "y": pl.Float64, "symbol": pl.String},
    )


def make_daily_filled(history: pl.DataFrame) -> pl.DataFrame:
    """Minimal daily_filled for charts: OHLC = close, MAs null until enough history."""
    return history.select(
        "symbol",
        pl.col("ds").alias("date"),
        pl.col("y").alias("open"),
        pl.col("y").alias("high"),
        pl.col("y").alias("low"),
        pl.col("y").alias("close"),
        pl.lit(1.0).alias("volume"),
        pl.lit(1440, dtype=pl.Int64).alias("minute_count"),
        (pl.int_range(pl.len()) % 97 == 0).alias("is_filled"),
        pl.col("y").rolling_mean(7, min_samples=7).alias("ma7"),
        pl.col("y").rolling_mean(30, min_samples=30).alias("ma30"),
    )


def synthetic_prices(n: int, seed: int = 7) -> np.ndarray:
    """Positive, trending, weekly-seasonal series with noise (Prophet-friendly)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    log_p = 9.0 + 0.002 * t + 0.02 * np.sin(2 * np.pi * t / 7) + np.cumsum(rng.normal(0, 0.01, n))
    return np.exp(log_p)


@pytest.fixture(scope="session")
def btc_history() -> pl.DataFrame:
    from crypto_assets.forecast.csv_input import read_daily_csv

    path = DAILY_DIR / "BTCUSDT_1d.csv"
    if not path.exists():
        pytest.skip(f"{path} not available")
    return read_daily_csv(path)
