"""Trades inside a minute, synthesized consistently with its candle.

Each minute with volume gets ``k`` trades at fixed offsets (``i * 60 s / k``). Their prices walk
open → low → high → close for a rising candle (open → high → low → close for a falling one), linearly
between those four points, which are hit exactly; the quantities add up to the candle's volume. So the
partial candle built from the trades so far ends as the recorded candle, and the first trade is at the
open, the last at the close. A minute without volume has no trades.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from crypto_assets.exchange.binance import MINUTE_MS

MIN_TRADES = 4  # open, low, high and close each need a trade of their own
QTY_SCALE = 1e8  # Binance quantities have eight decimals


def trade_offsets_ms(k: int) -> np.ndarray:
    """Milliseconds after the open at which the minute's trades happen; the first at 0."""
    return (np.arange(k, dtype=np.int64) * MINUTE_MS) // k


@dataclass(frozen=True)
class MinuteTrades:
    """The trades of n candles, as (n, k) arrays; rows without volume have zero quantities and no trades."""

    prices: np.ndarray
    qtys: np.ndarray
    buyer_maker: np.ndarray  # True when the price ticked down: the seller took the bid
    has_trades: np.ndarray  # (n,) bool

    @property
    def count(self) -> np.ndarray:
        return np.where(self.has_trades, self.prices.shape[1], 0)

    @cached_property
    def quote_volume(self) -> np.ndarray:
        return np.round((self.prices * self.qtys).sum(axis=1), 8)

    @cached_property
    def taker_buy_volume(self) -> np.ndarray:
        return np.round(np.where(self.buyer_maker, 0.0, self.qtys).sum(axis=1), 8)

    @cached_property
    def taker_buy_quote_volume(self) -> np.ndarray:
        return np.round(np.where(self.buyer_maker, 0.0, self.prices * self.qtys).sum(axis=1), 8)


def synthesize(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray, k: int) -> MinuteTrades:
    """Trades for candles given as equal-length arrays (see the module docstring)."""
    if k < MIN_TRADES:
        raise ValueError(f"trades per minute must be at least {MIN_TRADES}, got {k}")
    o, h, low, c, v = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (o, h, low, c, v))
    rising = c >= o
    vertices = np.stack([o, np.where(rising, low, h), np.where(rising, h, low), c], axis=1)  # (n, 4)
    at = np.array([0, (k - 1) // 3, 2 * (k - 1) // 3, k - 1])
    index = np.arange(k)
    segment = np.clip(np.searchsorted(at, index, side="right") - 1, 0, 2)
    fraction = (index - at[segment]) / (at[segment + 1] - at[segment])
    left, right = vertices[:, segment], vertices[:, segment + 1]
    prices = np.round(left + (right - left) * fraction, 8)
    prices[:, at] = vertices  # the four turning points exactly as recorded

    has_trades = v > 0
    each = np.floor(v / k * QTY_SCALE) / QTY_SCALE
    qtys = np.repeat(each[:, None], k, axis=1)
    qtys[:, -1] = np.maximum(np.round(v - each * (k - 1), 8), 0.0)
    qtys[~has_trades] = 0.0

    moves = np.diff(prices, axis=1, prepend=prices[:, :1])
    buyer_maker = moves < 0
    return MinuteTrades(prices, qtys, buyer_maker, has_trades)


def first_trade_id(open_ms: int, k: int) -> int:
    """Trade ids follow the clock, so they are the same whichever moment a replay starts at."""
    return (open_ms // MINUTE_MS) * k
