"""The columns of every candle dataset, in one place: the lake, the exchange client, both batch engines, the
serving layer and the speed layer all read them from here.

1-minute candles (``minute_raw``, ``exchange_minutes``, the speed layer's micro-batches), quarantined rows,
daily candles (``daily_raw``), the continuous daily series (``daily_filled``) and Prophet's input.
"""

from __future__ import annotations

import polars as pl

PRICES = ("open", "high", "low", "close")
OHLCV = (*PRICES, "volume")

MINUTE_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "open_time": pl.Datetime("us", "UTC"),
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
    }
)

# Bad rows keep what could be read of them, plus where they came from and why they were refused.
QUARANTINE_SCHEMA = pl.Schema({**MINUTE_SCHEMA, "source_file": pl.String, "line": pl.Int64, "reason": pl.String})

DAILY_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "date": pl.Date,
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
        "minute_count": pl.UInt32,
    }
)

MA_WINDOWS = {"ma7": 7, "ma30": 30}

FILLED_SCHEMA = pl.Schema({**DAILY_SCHEMA, "is_filled": pl.Boolean, **{name: pl.Float64 for name in MA_WINDOWS}})

PROPHET_SCHEMA = pl.Schema({"ds": pl.Date, "y": pl.Float64, "symbol": pl.String})


def epoch_to_datetime(value: pl.Expr) -> pl.Expr:
    """Unix time in s, ms, µs or ns, told apart per row by magnitude (dumps switched ms→µs in 2025), as the
    type of ``open_time``."""
    micros = (
        pl.when(value.abs() < 1e11)
        .then(value * 1e6)
        .when(value.abs() < 1e14)
        .then(value * 1e3)
        .when(value.abs() < 1e17)
        .then(value)
        .otherwise(value / 1e3)
    )
    return pl.from_epoch(micros.floor().cast(pl.Int64, strict=False), time_unit="us").dt.replace_time_zone("UTC")
