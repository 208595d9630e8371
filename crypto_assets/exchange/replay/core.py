"""State the replay's REST and WebSocket sides share: the market, the clock, the weight limiter, the faults,
the encoded events every connection reads, and the open connections. Lives on the server's event loop."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Protocol

from crypto_assets.exchange.replay.clock import ReplayClock
from crypto_assets.exchange.replay.encode import MinuteEvents, minute_events
from crypto_assets.exchange.replay.faults import Faults
from crypto_assets.exchange.replay.limits import WeightLimiter
from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.trades import MIN_TRADES


class Connection(Protocol):
    """An open WebSocket connection, as the core drops or shuts it down (``stream.StreamConnection``)."""

    def drop(self) -> None: ...

    async def shutdown(self, close_after: float) -> None: ...


class EventCache:
    """Encoded events of recent (symbol, minute)s, shared by every connection (they follow one clock).

    Minutes are encoded in blocks of ``BLOCK`` consecutive candles: one vectorized trade synthesis per block.
    """

    BLOCK = 32

    def __init__(self, core: ReplayCore, size: int = 8192):
        self.core = core
        self.size = size
        self._items: OrderedDict[tuple[str, int], MinuteEvents] = OrderedDict()

    def get(self, symbol: str, index: int) -> MinuteEvents:
        key = (symbol, index)
        events = self._items.get(key)
        if events is not None:
            return events
        candles = self.core.market.candles[symbol]
        hi = min(len(candles), index + self.BLOCK)
        for offset, item in enumerate(minute_events(candles, index, hi, self.core.trades_per_minute)):
            self._items[(symbol, index + offset)] = item
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return self._items[key]


class ReplayCore:
    """State shared by the REST and WebSocket sides; lives on the server's event loop."""

    def __init__(self, market: Market, clock: ReplayClock, limiter: WeightLimiter, trades_per_minute: int):
        if trades_per_minute < MIN_TRADES:
            raise ValueError(f"trades_per_minute must be at least {MIN_TRADES}, got {trades_per_minute}")
        self.market = market
        self.clock = clock
        self.limiter = limiter
        self.trades_per_minute = trades_per_minute
        self.faults = Faults()
        self.events = EventCache(self)
        self.ws_connections: set[Connection] = set()
        self.ws_connections_total = 0
        self.rest_connections: set[asyncio.StreamWriter] = set()
        self.messages_sent = 0
        self.rest_status_counts: dict[int, int] = {}
        self.rest_cut_counts: dict[str, int] = {}  # requests answered by an injected cut: dropped, truncated, malformed

    def count(self, status: int) -> None:
        self.rest_status_counts[status] = self.rest_status_counts.get(status, 0) + 1

    def count_cut(self, kind: str) -> None:
        self.rest_cut_counts[kind] = self.rest_cut_counts.get(kind, 0) + 1

    @staticmethod
    def wall_ms() -> int:
        return int(time.time() * 1000)

    def status(self) -> dict[str, object]:
        candles = self.market.candles
        return {
            "clock_ms": self.clock.now_ms(),
            "speed": self.clock.speed,
            "source": self.market.description,
            "symbols": {s: {"first_ms": c.first_ms, "last_ms": c.last_ms, "rows": len(c)} for s, c in candles.items()},
            "weight_limit": self.limiter.limit,
            "weight_window_seconds": self.limiter.window_seconds,
            "rest_status_counts": {str(k): v for k, v in sorted(self.rest_status_counts.items())},
            "rest_cut_counts": dict(sorted(self.rest_cut_counts.items())),
            "ws_connections": len(self.ws_connections),
            "ws_connections_total": self.ws_connections_total,
            "ws_messages_sent": self.messages_sent,
            "faults": self.faults.as_dict(),
        }

    def apply_faults(self, values: dict[str, object]) -> None:
        """Fault fields to set plus the actions ``ws_drop_now: true`` and ``ws_server_shutdown: <seconds>|true``."""
        values = dict(values)
        drop = values.pop("ws_drop_now", False)
        shutdown = values.pop("ws_server_shutdown", None)
        self.faults.update(**values)
        if drop:
            self.drop_connections()
        if shutdown is not None and shutdown is not False:
            close_after = 0.0 if shutdown is True else float(shutdown)
            if close_after < 0:
                raise ValueError(f"ws_server_shutdown: expected seconds >= 0, got {shutdown!r}")
            self.server_shutdown(close_after)

    def drop_connections(self) -> int:
        connections = list(self.ws_connections)
        for conn in connections:
            conn.drop()
        return len(connections)

    def server_shutdown(self, close_after: float = 0.0) -> int:
        connections = list(self.ws_connections)
        for conn in connections:
            asyncio.get_running_loop().create_task(conn.shutdown(close_after))
        return len(connections)
