"""Binance spot wire formats shared by the REST client and the replay server.

A kline on ``GET /api/v3/klines`` is an array of 12 fields::

    [open_time, "open", "high", "low", "close", "volume", close_time,
     "quote_volume", trades, "taker_buy_base_volume", "taker_buy_quote_volume", "0"]

Times are epoch milliseconds (microseconds when the request carries ``X-MBX-TIME-UNIT: MICROSECOND``);
prices and volumes are decimal strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from crypto_assets.schema import MINUTE_SCHEMA, OHLCV, epoch_to_datetime

KLINES_PATH = "/api/v3/klines"
KLINES_WEIGHT = 2  # request weight of one /api/v3/klines call, whatever its limit
MAX_KLINES_LIMIT = 1000
DEFAULT_KLINES_LIMIT = 500
MINUTE_MS = 60_000
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
TIME_UNIT_HEADER = "X-MBX-TIME-UNIT"

KLINE_FIELDS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
)


def format_decimal(value: float) -> str:
    """Eight decimals like Binance ("51696.70000000"), unless that would not parse back to the same float."""
    text = f"{value:.8f}"
    return text if float(text) == value else repr(float(value))


def klines_to_frame(rows: Sequence[Sequence[object]], symbol: str) -> pl.DataFrame:
    """Binance kline arrays as a frame in ``MINUTE_SCHEMA``; open_time may be ms or µs (told by magnitude)."""
    if not rows:
        return pl.DataFrame(schema=MINUTE_SCHEMA)
    columns = list(zip(*(row[:6] for row in rows), strict=True))
    frame = pl.DataFrame(
        {
            "open_time": pl.Series(columns[0], dtype=pl.Float64),
            **{name: pl.Series(columns[i + 1], dtype=pl.String) for i, name in enumerate(OHLCV)},
        }
    )
    return frame.select(
        pl.lit(symbol, dtype=pl.String).alias("symbol"),
        epoch_to_datetime(pl.col("open_time")).alias("open_time"),
        *[pl.col(name).cast(pl.Float64) for name in OHLCV],
    )


def first_bad_kline(rows: object) -> str | None:
    """Where a klines answer breaks the format (row number from 1, field name, value), or None when each
    row has a whole-number open time and decimal open, high, low, close and volume."""
    if not isinstance(rows, list):
        return f"expected a JSON array of klines, got {type(rows).__name__}"
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, list) or len(row) < 6:
            return f"kline {number}: expected an array of {len(KLINE_FIELDS)} fields, got {str(row)[:120]!r}"
        if isinstance(row[0], bool) or not isinstance(row[0], int | float) or row[0] != int(row[0]):
            return f"kline {number}: field 'open_time' = {row[0]!r} is not a whole number of ms or µs"
        for index, name in enumerate(KLINE_FIELDS[1:6], start=1):
            value = row[index]
            try:
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise TypeError
                float(value)
            except (TypeError, ValueError):
                return f"kline {number} (open_time {row[0]}): field {name!r} = {value!r} is not a decimal number"
    return None
