"""Binance combined-stream payloads built from recorded 1-minute candles, for feeding Kafka directly.

Each minute becomes partial kline updates (running values that end at the recorded candle), a few trades in
between, and the final kline with ``x=true`` carrying exactly the recorded values.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

MINUTE_MS = 60_000


def recorded_candles(shared_data: Path, symbol: str, year: int, start: datetime, minutes: int) -> pl.DataFrame:
    path = shared_data / "binance_spot_1m" / str(year) / f"{symbol}_1m.csv"
    frame = pl.read_csv(path, try_parse_dates=True)
    return (
        frame.with_columns(
            pl.col("timestamp").dt.replace_time_zone("UTC").alias("open_time"), pl.lit(symbol).alias("symbol")
        )
        .filter(pl.col("open_time") >= start.replace(tzinfo=UTC))
        .head(minutes)
        .select("symbol", "open_time", "open", "high", "low", "close", "volume")
    )


def _fmt(value: float) -> str:
    return repr(float(value))


def kline(symbol: str, t: int, o, h, lo, c, v, closed: bool, event: int) -> dict:
    return {
        "e": "kline",
        "E": event,
        "s": symbol,
        "k": {
            "t": t,
            "T": t + MINUTE_MS - 1,
            "s": symbol,
            "i": "1m",
            "f": 1,
            "L": 2,
            "o": _fmt(o),
            "c": _fmt(c),
            "h": _fmt(h),
            "l": _fmt(lo),
            "v": _fmt(v),
            "n": 2,
            "x": closed,
            "q": "0",
            "V": "0",
            "Q": "0",
            "B": "0",
        },
    }


def trade(symbol: str, trade_id: int, price: float, qty: float, when: int) -> dict:
    return {
        "e": "trade",
        "E": when,
        "s": symbol,
        "t": trade_id,
        "p": _fmt(price),
        "q": _fmt(qty),
        "T": when,
        "m": False,
        "M": True,
    }


def minute_messages(row: dict, updates: int = 2) -> list[tuple[str, dict]]:
    """(stream, payload) pairs for one recorded minute, in exchange time order."""
    symbol = row["symbol"]
    t = int(row["open_time"].timestamp() * 1000)
    o, h, lo, c, v = row["open"], row["high"], row["low"], row["close"], row["volume"]
    out: list[tuple[str, dict]] = []
    for i in range(1, updates + 1):
        f = i / (updates + 1)
        close_f = o + (c - o) * f
        high_f = max(o, close_f) + (h - max(o, c)) * f
        low_f = min(o, close_f) - (min(o, c) - lo) * f
        when = t + int(MINUTE_MS * f)
        out.append((f"{symbol.lower()}@trade", trade(symbol, t + i, close_f, v * f / 10, when - 500)))
        out.append((f"{symbol.lower()}@kline_1m", kline(symbol, t, o, high_f, low_f, close_f, v * f, False, when)))
        out.append((f"{symbol.lower()}@trade", trade(symbol, t + 100 + i, close_f, v * f / 10, when + 500)))
    out.append((f"{symbol.lower()}@kline_1m", kline(symbol, t, o, h, lo, c, v, True, t + MINUTE_MS)))
    return out


def stream_messages(candles: pl.DataFrame, updates: int = 2) -> list[tuple[str, dict]]:
    messages: list[tuple[str, dict]] = []
    for row in candles.sort("open_time", "symbol").iter_rows(named=True):
        messages += minute_messages(row, updates)
    return messages


def publish(bootstrap: str, topic_prefix: str, messages: list[tuple[str, dict]]) -> int:
    """Publish payloads the way the producer does: topic per stream type, keyed by symbol."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for stream, payload in messages:
        kind = stream.split("@", 1)[1]
        producer.produce(f"{topic_prefix}.{kind}", key=payload["s"].encode(), value=json.dumps(payload).encode())
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages not delivered"
    return len(messages)
