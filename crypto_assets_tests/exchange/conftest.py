"""Replay servers over the real 2021 recording, for the client and stream tests."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from crypto_assets.exchange.replay.market import Market

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.fixture(scope="session")
def btc_2021(shared_data: Path) -> Path:
    return shared_data / "binance_spot_1m" / "2021" / "BTCUSDT_1m.csv"


@pytest.fixture(scope="session")
def recorded_2021(btc_2021: Path) -> pl.DataFrame:
    """The recorded CSV read independently of the replay: the oracle for exact values."""
    return pl.read_csv(
        btc_2021, schema_overrides={c: pl.Float64 for c in ("open", "high", "low", "close", "volume")}
    ).select(
        pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", time_zone="UTC").alias("open_time"),
        "open",
        "high",
        "low",
        "close",
        "volume",
    )


@pytest.fixture(scope="session")
def market_2021(shared_data: Path) -> Market:
    return Market.from_sources([shared_data / "binance_spot_1m" / "2021"], SYMBOLS)
