"""Binance's JSON for the replay: REST kline arrays and the WebSocket kline/trade events of minutes.

Everything is built as bytes with f-strings from plain Python floats (no json.dumps, no numpy per message):
the WebSocket side must send tens of thousands of messages a second. Trades come from
:func:`~crypto_assets.exchange.replay.trades.synthesize` over blocks of candles, so the REST row and the final
WebSocket kline of a minute carry the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
ZERO = "0.00000000"


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


class _Block:
    """Candles [lo, hi) of one symbol with their trades, as Python lists."""

    def __init__(self, candles: Candles, lo: int, hi: int, k: int):
        sl = slice(lo, hi)
        trades: MinuteTrades = synthesize(
            candles.open[sl], candles.high[sl], candles.low[sl], candles.close[sl], candles.volume[sl], k
        )
        self.candles, self.lo, self.k = candles, lo, k
        self.open_ms = candles.open_ms[sl].tolist()
        self.prices = trades.prices.tolist()
        self.qtys = trades.qtys.tolist()
        self.maker = trades.buyer_maker.tolist()
        self.has = trades.has_trades.tolist()
        self.quote = trades.quote_volume.tolist()
        self.taker_base = trades.taker_buy_volume.tolist()
        self.taker_quote = trades.taker_buy_quote_volume.tolist()
        self.offsets = trade_offsets_ms(k).tolist()

    def final(self, row: int) -> CandleState:
        c, i = self.candles, self.lo + row
        n = self.k if self.has[row] else 0
        first = first_trade_id(self.open_ms[row], self.k)
        return CandleState(
            format_decimal(float(c.open[i])),
            format_decimal(float(c.high[i])),
            format_decimal(float(c.low[i])),
            format_decimal(float(c.close[i])),
            format_decimal(float(c.volume[i])),
            n,
            first if n else -1,
            first + n - 1 if n else -1,
            f"{self.quote[row]:.8f}",
            f"{self.taker_base[row]:.8f}",
            f"{self.taker_quote[row]:.8f}",
            True,
        )

    def partials(self, row: int, moments: list[int]) -> list[CandleState]:
        """The candle after each of ``moments`` (ms into the minute, ascending, < 60 000)."""
        o = float(self.candles.open[self.lo + row])
        if not self.has[row]:
            flat = f"{o:.8f}"
            return [CandleState(flat, flat, flat, flat, ZERO, 0, -1, -1, ZERO, ZERO, ZERO, False) for _ in moments]
        prices, qtys, maker, offsets = self.prices[row], self.qtys[row], self.maker[row], self.offsets
        first = first_trade_id(self.open_ms[row], self.k)
        states = []
        j = 0
        high = low = prices[0]
        volume = quote = taker_base = taker_quote = 0.0
        state = None
        for moment in moments:
            if state is not None and (j == self.k or offsets[j] > moment):
                states.append(state)  # no trade since the last moment: the same candle
                continue
            while j < self.k and offsets[j] <= moment:
                p, q = prices[j], qtys[j]
                high, low = max(high, p), min(low, p)
                volume += q
                quote += p * q
                if not maker[j]:
                    taker_base += q
                    taker_quote += p * q
                j += 1
            state = CandleState(
                f"{o:.8f}",
                f"{high:.8f}",
                f"{low:.8f}",
                f"{prices[j - 1]:.8f}",
                f"{volume:.8f}",
                j,
                first,
                first + j - 1,
                f"{quote:.8f}",
                f"{taker_base:.8f}",
                f"{taker_quote:.8f}",
                False,
            )
            states.append(state)
        return states


# -- REST -------------------------------------------------------------------------------------------------


def klines_json(candles: Candles, lo: int, hi: int, clock_ms: int, k: int, microseconds: bool) -> bytes:
    """Rows [lo, hi) as ``/api/v3/klines`` answers them; a candle still open at ``clock_ms`` is partial."""
    if hi <= lo:
        return b"[]"
    block = _Block(candles, lo, hi, k)
    scale, close_offset = (1000, MINUTE_MS * 1000 - 1) if microseconds else (1, MINUTE_MS - 1)
    parts = []
    for row, open_ms in enumerate(block.open_ms):
        elapsed = clock_ms - open_ms
        s = block.final(row) if elapsed >= MINUTE_MS else block.partials(row, [elapsed])[0]
        t = open_ms * scale
        parts.append(
            f'[{t},"{s.open}","{s.high}","{s.low}","{s.close}","{s.volume}",{t + close_offset},'
            f'"{s.quote}",{s.trades},"{s.taker_base}","{s.taker_quote}","0"]'
        )
    return ("[" + ",".join(parts) + "]").encode()


# -- WebSocket --------------------------------------------------------------------------------------------


@dataclass
class MinuteEvents:
    """The WebSocket events of one symbol's minute in send order: event times (ms), kinds, raw payloads,
    and the same payloads as ready-made WebSocket frames, bare and wrapped for combined streams."""

    symbol: str
    times: list[int]
    kinds: list[int]
    payloads: list[bytes]
    _frames: dict[bool, list[bytes]] = field(default_factory=dict)

    def frames(self, combined: bool) -> list[bytes]:
        frames = self._frames.get(combined)
        if frames is None:
            if combined:
                name = self.symbol.lower()
                wrappers = {
                    kind: f'{{"stream":"{name}@{STREAM_SUFFIX[kind]}","data":'.encode() for kind in (TRADE, KLINE)
                }
                frames = [text_frame(wrappers[k] + p + b"}") for k, p in zip(self.kinds, self.payloads, strict=True)]
            else:
                frames = [text_frame(p) for p in self.payloads]
            self._frames[combined] = frames
        return frames


STREAM_SUFFIX = {TRADE: "trade", KLINE: "kline_1m"}


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame (what a server sends), built once and sent to every reader."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def _kline_payload(symbol: str, event_ms: int, open_ms: int, s: CandleState) -> bytes:
    return f'{{"e":"kline","E":{event_ms},{_kline_body(symbol, open_ms, s)}'.encode()


def _kline_body(symbol: str, open_ms: int, s: CandleState) -> str:
    """Everything of a kline event after its event time."""
    return (
        f'"s":"{symbol}","k":{{"t":{open_ms},"T":{open_ms + MINUTE_MS - 1},'
        f'"s":"{symbol}","i":"1m","f":{s.first_id},"L":{s.last_id},"o":"{s.open}","c":"{s.close}",'
        f'"h":"{s.high}","l":"{s.low}","v":"{s.volume}","n":{s.trades},"x":{"true" if s.closed else "false"},'
        f'"q":"{s.quote}","V":"{s.taker_base}","Q":"{s.taker_quote}","B":"0"}}}}'
    )


UPDATE_MOMENTS = list(range(0, MINUTE_MS, KLINE_UPDATE_MS))


def minute_events(candles: Candles, lo: int, hi: int, k: int) -> list[MinuteEvents]:
    """Events of candles [lo, hi): trades at their offsets, a kline update every 2 s (x=false) from the open,
    and the final kline (x=true, equal to the recorded candle) at the end of the minute."""
    symbol = candles.symbol
    block = _Block(candles, lo, hi, k)
    out = []
    for row, open_ms in enumerate(block.open_ms):
        events: list[tuple[int, int, bytes]] = []
        if block.has[row]:
            first = first_trade_id(open_ms, k)
            prices, qtys, maker = block.prices[row], block.qtys[row], block.maker[row]
            for i, offset in enumerate(block.offsets):
                at = open_ms + offset
                payload = (
                    f'{{"e":"trade","E":{at},"s":"{symbol}","t":{first + i},"p":"{prices[i]:.8f}","q":"{qtys[i]:.8f}",'
                    f'"T":{at},"m":{"true" if maker[i] else "false"},"M":true}}'
                ).encode()
                events.append((at, TRADE, payload))
        body, previous = "", None
        for moment, state in zip(UPDATE_MOMENTS, block.partials(row, UPDATE_MOMENTS), strict=True):
            if state is not previous:  # between trades the candle is unchanged: only the event time moves
                body, previous = _kline_body(symbol, open_ms, state), state
            at = open_ms + moment
            events.append((at, KLINE, f'{{"e":"kline","E":{at},{body}'.encode()))
        end = open_ms + MINUTE_MS
        events.append((end, KLINE, _kline_payload(symbol, end, open_ms, block.final(row))))
        events.sort(key=lambda e: (e[0], e[1]))  # a trade before the kline update of the same instant
        out.append(MinuteEvents(symbol, [e[0] for e in events], [e[1] for e in events], [e[2] for e in events]))
    return out
