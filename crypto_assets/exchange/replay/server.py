"""The exchange replay server: Binance's REST klines and WebSocket market streams, served from recorded or
synthetic candles on a replay clock, with faults on request.

In a test::

    market = Market.from_sources([shared_data / "binance_spot_1m/2021"], ["BTCUSDT", "ETHUSDT"])
    with ReplayServer(market, start=datetime(2021, 3, 26, 3, tzinfo=UTC), speed=60) as replay:
        settings = ExchangeSettings(rest_url=replay.rest_url, ws_url=replay.ws_url)
        replay.inject(rest_429=2)          # the next two REST answers are 429
        ...

The REST API and the WebSocket streams listen on two ports of the same host (127.0.0.1 by default).

Clock: exchange time starts at ``start`` and runs at ``speed`` × real time. Only candles that opened at or
before the clock exist, on REST as on the streams. When ``start`` is not given it is *now* for a live
(synthetic) market, and the end of the recording for recorded data, so every recorded candle can be fetched
over REST at once (the streams then have nothing left to send: give ``start`` to stream a recording).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Self

from websockets.asyncio.server import Server, serve

from crypto_assets.exchange.replay.clock import ReplayClock
from crypto_assets.exchange.replay.core import ReplayCore
from crypto_assets.exchange.replay.limits import WeightLimiter
from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.rest import RestApi
from crypto_assets.exchange.replay.stream import (
    StreamServer,
)


class ReplayServer:
    """Serve ``market`` like Binance; see the module docstring. Start it with ``with`` (a background thread)
    or, inside a running event loop, with ``await server.start_async()`` / ``await server.stop_async()``."""

    def __init__(
        self,
        market: Market,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ws_port: int = 0,
        start: datetime | None = None,
        speed: float = 1.0,
        weight_limit: int = 6000,
        weight_window_seconds: float = 60.0,
        ban_seconds: float = 120.0,
        trades_per_minute: int = 12,
    ):
        if start is None:
            start_ms = int(time.time() * 1000) if market.live else market.end_ms
        else:
            start = start if start.tzinfo else start.replace(tzinfo=UTC)
            start_ms = int(start.timestamp() * 1000)
        self.host = host
        self._ports = (port, ws_port)
        self.core = ReplayCore(
            market,
            ReplayClock(start_ms, speed),
            WeightLimiter(weight_limit, weight_window_seconds, ban_seconds),
            trades_per_minute,
        )
        self.core.market.ensure(start_ms + 2 * 60_000)  # a live market's first day is ready before clients come
        self._rest: asyncio.Server | None = None
        self._ws: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    # -- addresses ------------------------------------------------------------------------------------------

    @property
    def rest_port(self) -> int:
        assert self._rest is not None, "the replay server is not started"
        return self._rest.sockets[0].getsockname()[1]

    @property
    def ws_port(self) -> int:
        assert self._ws is not None, "the replay server is not started"
        return self._ws.sockets[0].getsockname()[1]

    @property
    def rest_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.rest_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{_url_host(self.host)}:{self.ws_port}"

    @property
    def banner(self) -> str:
        """The one line the CLI prints on start-up."""
        return f"REST {self.rest_url}  WS {self.ws_url}"

    @property
    def clock(self) -> ReplayClock:
        return self.core.clock

    # -- lifecycle in a running loop ----------------------------------------------------------------------

    async def start_async(self) -> ReplayServer:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        api = RestApi(self.core)
        self._rest = await asyncio.start_server(api.handle, self.host, self._ports[0])
        streams = StreamServer(self.core)
        self._ws = await serve(
            streams.handle,
            self.host,
            self._ports[1],
            process_request=streams.process_request,
            compression=None,
            max_queue=64,
            close_timeout=2,
            write_limit=2**20,
        )
        return self

    async def stop_async(self) -> None:
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
        if self._rest is not None:
            self._rest.close()
            for writer in list(self.core.rest_connections):
                writer.close()
            await self._rest.wait_closed()
        if self._stopped is not None:
            self._stopped.set()

    async def serve_until_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    # -- lifecycle in a background thread ---------------------------------------------------------------

    def start(self) -> ReplayServer:
        started: Future[None] = Future()

        def run() -> None:
            async def main() -> None:
                try:
                    await self.start_async()
                except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                    started.set_exception(exc)
                    return
                started.set_result(None)
                await self.serve_until_stopped()

            asyncio.run(main())

        self._thread = threading.Thread(target=run, name="exchange-replay", daemon=True)
        self._thread.start()
        started.result(timeout=60)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop_async(), self._loop).result(timeout=30)
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- faults and status (thread-safe) ----------------------------------------------------------------

    def _call(self, fn, *args):
        if self._loop is None or self._thread is None or threading.current_thread() is self._thread:
            return fn(*args)

        async def on_loop():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result(timeout=30)

    def inject(self, **faults: object) -> dict[str, object]:
        """Set fault fields (see :class:`~crypto_assets.exchange.replay.faults.Faults`) and the actions
        ``ws_drop_now=True`` / ``ws_server_shutdown=<seconds before closing>``; returns the fault state."""
        return self._call(lambda: (self.core.apply_faults(faults), self.core.faults.as_dict())[1])

    def clear_faults(self) -> None:
        self._call(self.core.faults.clear)

    def drop_connections(self) -> int:
        """Cut every WebSocket connection now (no close frame); returns how many there were."""
        return self._call(self.core.drop_connections)

    def server_shutdown(self, close_after: float = 0.0) -> int:
        """Send ``serverShutdown`` to every WebSocket connection, then close each after ``close_after`` s."""
        return self._call(self.core.server_shutdown, close_after)

    def status(self) -> dict[str, object]:
        """Clock, data span, REST status counts, WebSocket connection and message counts, faults."""
        return self._call(self.core.status)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
