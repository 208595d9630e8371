"""Binance's JSON for the replay: REST kline arrays and the WebSocket kline/trade events of a minute.

Everything is built as bytes with f-strings (no json.dumps per message): the WebSocket side must send tens of
thousands of messages a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crypto_assets.exchange.binance import MINUTE_MS, format_decimal
from crypto_assets.exchange.replay.market import Candles
from crypto_assets.exchange.replay.trades import (
    MinuteTrades,
    first_trade_id,
    synthesize,
    trade_offsets_ms,
)

KLINE_UPDATE_MS = 2_000  # Binance pushes a 1m kline update every 2 s
TRADE, KLINE = 0, 1


def _d(value: float) -> str:
    return f"{value:.8f}"


@dataclass(frozen=True)
class CandleState:
    """A candle as the exchange shows it at some moment of its minute (final when ``closed``)."""

    open: str
    high: str
    low: str
    close: str
    volume: str
    trades: int
    first_id: int
    last_id: int
    quote: str
    taker_base: str
    taker_quote: str
    closed: bool


def candle_state(candles: Candles, index: int, trades: MinuteTrades, row: int, k: int, elapsed_ms: int) -> CandleState:
    """The candle ``index`` after ``elapsed_ms`` of its minute; at 60 000 ms and beyond it is the recorded row."""
    open_ms = int(candles.open_ms[index])
    first = first_trade_id(open_ms, k)
    has = bool(trades.has_trades[row])
    if elapsed_ms >= MINUTE_MS:
        n = k if has else 0
        return CandleState(
            format_decimal(float(candles.open[index])), format_decimal(float(candles.high[index])),
            format_decimal(float(candles.low[index])), format_decimal(float(candles.close[index])),
            format_decimal(float(candles.volume[index])), n, first if n else -1, first + n - 1 if n else -1,
            _d(float(trades.quote_volume[row])), _d(float(trades.taker_buy_volume[row])),
            _d(float(trades.taker_buy_quote_volume[row])), True,
        )  # fmt: skip
    o = float(candles.open[index])
    if not has:
        text = _d(o)
        return CandleState(text, text, text, text, _d(0.0), 0, -1, -1, _d(0.0), _d(0.0), _d(0.0), False)
    j = int(np.searchsorted(trade_offsets_ms(k), elapsed_ms, side="right"))
    prices, qtys, maker = trades.prices[row, :j], trades.qtys[row, :j], trades.buyer_maker[row, :j]
    taker = ~maker
    return CandleState(
        _d(o), _d(float(prices.max())), _d(float(prices.min())), _d(float(prices[-1])), _d(float(qtys.sum())),
        j, first, first + j - 1, _d(float((prices * qtys).sum())), _d(float(qtys[taker].sum())),
        _d(float((prices[taker] * qtys[taker]).sum())), False,
    )  # fmt: skip


# -- REST -------------------------------------------------------------------------------------------------


def klines_json(candles: Candles, lo: int, hi: int, clock_ms: int, k: int, microseconds: bool) -> bytes:
    """Rows [lo, hi) as ``/api/v3/klines`` answers them; a candle still open at ``clock_ms`` is partial."""
    if hi <= lo:
        return b"[]"
    sl = slice(lo, hi)
    trades = synthesize(candles.open[sl], candles.high[sl], candles.low[sl], candles.close[sl], candles.volume[sl], k)
    scale, close_offset = (1000, MINUTE_MS * 1000 - 1) if microseconds else (1, MINUTE_MS - 1)
    parts = []
    for row, index in enumerate(range(lo, hi)):
        open_ms = int(candles.open_ms[index])
        s = candle_state(candles, index, trades, row, k, clock_ms - open_ms)
        t = open_ms * scale
        parts.append(
            f'[{t},"{s.open}","{s.high}","{s.low}","{s.close}","{s.volume}",{t + close_offset},'
            f'"{s.quote}",{s.trades},"{s.taker_base}","{s.taker_quote}","0"]'
        )
    return ("[" + ",".join(parts) + "]").encode()


# -- WebSocket --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MinuteEvents:
    """The WebSocket events of one symbol's minute in send order: event times (ms), kinds, raw payloads."""

    times: list[int]
    kinds: list[int]
    payloads: list[bytes]


def _kline_payload(symbol: str, event_ms: int, open_ms: int, s: CandleState) -> bytes:
    return (
        f'{{"e":"kline","E":{event_ms},"s":"{symbol}","k":{{"t":{open_ms},"T":{open_ms + MINUTE_MS - 1},'
        f'"s":"{symbol}","i":"1m","f":{s.first_id},"L":{s.last_id},"o":"{s.open}","c":"{s.close}",'
        f'"h":"{s.high}","l":"{s.low}","v":"{s.volume}","n":{s.trades},"x":{"true" if s.closed else "false"},'
        f'"q":"{s.quote}","V":"{s.taker_base}","Q":"{s.taker_quote}","B":"0"}}}}'
    ).encode()


def minute_events(candles: Candles, index: int, k: int) -> MinuteEvents:
    """Trades at their offsets, a kline update every 2 s (x=false) from the open, and the final kline
    (x=true, equal to the recorded candle) at the end of the minute."""
    symbol = candles.symbol
    open_ms = int(candles.open_ms[index])
    sl = slice(index, index + 1)
    trades = synthesize(candles.open[sl], candles.high[sl], candles.low[sl], candles.close[sl], candles.volume[sl], k)
    events: list[tuple[int, int, bytes]] = []
    if trades.has_trades[0]:
        first = first_trade_id(open_ms, k)
        for i, offset in enumerate(trade_offsets_ms(k).tolist()):
            at = open_ms + offset
            payload = (
                f'{{"e":"trade","E":{at},"s":"{symbol}","t":{first + i},"p":"{_d(float(trades.prices[0, i]))}",'
                f'"q":"{_d(float(trades.qtys[0, i]))}","T":{at},"m":{"true" if trades.buyer_maker[0, i] else "false"},"M":true}}'
            ).encode()
            events.append((at, TRADE, payload))
    for elapsed in range(0, MINUTE_MS + 1, KLINE_UPDATE_MS):
        state = candle_state(candles, index, trades, 0, k, elapsed)
        events.append((open_ms + elapsed, KLINE, _kline_payload(symbol, open_ms + elapsed, open_ms, state)))
    events.sort(key=lambda e: (e[0], e[1]))  # a trade before the kline update of the same instant
    return MinuteEvents([e[0] for e in events], [e[1] for e in events], [e[2] for e in events])
