"""The replay's WebSocket side, in Binance's market-stream format.

* Combined streams ``/stream?streams=btcusdt@kline_1m/btcusdt@trade`` wrap each event as
  ``{"stream":"btcusdt@kline_1m","data":{...}}``; raw streams ``/ws/btcusdt@kline_1m`` (several joined by
  ``/`` allowed) send the bare event. ``/ws`` and ``/stream`` alone start empty; Binance's
  ``{"method":"SUBSCRIBE"|"UNSUBSCRIBE"|"LIST_SUBSCRIPTIONS","params":[...],"id":N}`` work on any connection.
* Streams: ``<symbol>@kline_1m`` (an update every 2 s of replay time with the candle formed so far, ``x``
  false, then the final update with ``x`` true equal to the recorded candle) and ``<symbol>@trade``.
* A connection receives the events after the moment it connected, at the pace of the shared replay clock.
  Events that fall due together are sent in one write, so high replay speeds reach tens of thousands of
  messages a second.
* ``serverShutdown``: ``{"e":"serverShutdown","E":<ms>}`` is sent as it is on both kinds of connection
  (a connection event, not a stream's), then the connection closes with 1001.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import json
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from crypto_assets.exchange.binance import MINUTE_MS
from crypto_assets.exchange.replay.core import ReplayCore
from crypto_assets.exchange.replay.encode import (
    KLINE,
    TRADE,
    text_frame,
)

STREAM_KINDS = {"kline_1m": KLINE, "trade": TRADE}
SEND_CHUNK = 2000  # messages per write; bounds the buffer when a slow reader falls behind
MIN_SLEEP = 0.002  # at high speed, wake at most every 2 ms and send everything due at once
MAX_SLEEP = 0.5  # re-check subscriptions, faults and lifetime at least this often
MAX_BATCH_SPAN_MS = 5 * MINUTE_MS  # replay time collected per write at most
MALFORMED = text_frame(b'{"stream":"replay@malformed","data":{"e":"kline","E":')  # cut short: not JSON
Stream = tuple[str, int]  # (SYMBOL, kind)


class StreamNameError(ValueError):
    pass


def parse_stream(name: str, symbols: Iterable[str]) -> Stream:
    """``btcusdt@kline_1m`` → ("BTCUSDT", KLINE); unknown symbols and stream types are errors."""
    symbol, _, kind = name.partition("@")
    if kind not in STREAM_KINDS:
        raise StreamNameError(f"unsupported stream {name!r}: the replay serves <symbol>@kline_1m and <symbol>@trade")
    if symbol != symbol.lower() or symbol.upper() not in set(symbols):
        raise StreamNameError(
            f"unknown symbol in stream {name!r}: streams use lower-case symbols of {', '.join(symbols)}"
        )
    return symbol.upper(), STREAM_KINDS[kind]


def stream_name(stream: Stream) -> str:
    kind = next(k for k, v in STREAM_KINDS.items() if v == stream[1])
    return f"{stream[0].lower()}@{kind}"


def parse_path(path: str, symbols: Iterable[str]) -> tuple[list[Stream], bool]:
    """The streams a connection URL asks for, and whether they are combined."""
    url = urlsplit(path)
    symbols = list(symbols)
    if url.path in ("/stream", "/stream/"):
        names = [n for raw in parse_qs(url.query).get("streams", []) for n in raw.split("/") if n]
        return [parse_stream(n, symbols) for n in names], True
    if url.path == "/ws" or url.path.startswith("/ws/"):
        names = [n for n in url.path[len("/ws") :].split("/") if n]
        return [parse_stream(n, symbols) for n in names], False
    raise StreamNameError(f"unknown path {url.path!r}: use /ws/<stream> or /stream?streams=<stream>/<stream>")


class StreamConnection:
    """One WebSocket client: its subscriptions, and the loop that sends it the replay's events."""

    def __init__(self, core: ReplayCore, ws: ServerConnection, streams: list[Stream], combined: bool):
        self.core = core
        self.ws = ws
        self.streams: list[Stream] = list(dict.fromkeys(streams))
        self.combined = combined
        self.opened_at = asyncio.get_running_loop().time()
        self.changed = asyncio.Event()
        self.closing = False
        self.sent = 0

    # -- selection ------------------------------------------------------------------------------------------

    def _by_symbol(self) -> dict[str, set[int]]:
        wanted: dict[str, set[int]] = {}
        for symbol, kind in self.streams:
            wanted.setdefault(symbol, set()).add(kind)
        return wanted

    def collect(self, after_ms: int, upto_ms: int) -> list[bytes]:
        """Frames of the subscribed streams with event time in (after_ms, upto_ms], in send order."""
        per_symbol = []
        for symbol, kinds in self._by_symbol().items():
            candles = self.core.market.candles[symbol]
            # A minute's events run from its open to its close (the final kline), so start one minute back.
            lo = int(np.searchsorted(candles.open_ms, (after_ms // MINUTE_MS - 1) * MINUTE_MS, side="left"))
            hi = int(np.searchsorted(candles.open_ms, upto_ms, side="right"))
            every_kind = len(kinds) == len(STREAM_KINDS)
            items: list[tuple[int, bytes]] = []
            for index in range(lo, hi):
                events = self.core.events.get(symbol, index)
                first = bisect.bisect_right(events.times, after_ms)
                last = bisect.bisect_right(events.times, upto_ms)
                if first == last:
                    continue
                frames, times = events.frames(self.combined), events.times
                if every_kind:
                    items.extend(zip(times[first:last], frames[first:last], strict=True))
                else:
                    event_kinds = events.kinds
                    items.extend((times[i], frames[i]) for i in range(first, last) if event_kinds[i] in kinds)
            if items:
                per_symbol.append(items)
        if not per_symbol:
            return []
        if len(per_symbol) == 1:
            return [m for _, m in per_symbol[0]]
        return [m for _, m in heapq.merge(*per_symbol, key=lambda item: item[0])]

    def next_event_ms(self, after_ms: int) -> int | None:
        """Time of the first subscribed event after ``after_ms`` (None when the data has run out)."""
        best = None
        for symbol in self._by_symbol():
            candles = self.core.market.candles[symbol]
            index = int(np.searchsorted(candles.open_ms, (after_ms // MINUTE_MS - 1) * MINUTE_MS, side="left"))
            while index < len(candles):
                times = self.core.events.get(symbol, index).times
                j = bisect.bisect_right(times, after_ms)
                if j < len(times):
                    best = times[j] if best is None else min(best, times[j])
                    break
                index += 1
        return best

    # -- sending --------------------------------------------------------------------------------------------

    async def _write(self, frames: list[bytes]) -> None:
        """Write ready-made text frames; websockets still checks the connection is open and applies flow control."""
        ws = self.ws
        for start in range(0, len(frames), SEND_CHUNK):
            async with ws.send_context():
                ws.transport.write(b"".join(frames[start : start + SEND_CHUNK]))
        self.sent += len(frames)
        self.core.messages_sent += len(frames)

    async def send(self, messages: list[bytes]) -> bool:
        """Send with the faults in force; False when a fault cut the connection."""
        faults = self.core.faults
        if not (faults.ws_malformed or faults.ws_drop_after):
            await self._write(messages)
            return True
        out: list[bytes] = []
        for message in messages:
            if faults.ws_malformed:
                faults.ws_malformed -= 1
                out.append(MALFORMED)
            out.append(message)
            if faults.ws_drop_after:
                faults.ws_drop_after -= 1
                if not faults.ws_drop_after:
                    await self._write(out)
                    self.drop()
                    return False
        await self._write(out)
        return True

    def drop(self) -> None:
        """Cut the TCP connection without a close frame, as a network failure would."""
        self.closing = True
        self.ws.transport.abort()

    async def shutdown(self, close_after: float) -> None:
        """Binance's serverShutdown notice, then a close."""
        self.closing = True
        self.changed.set()
        try:
            payload = f'{{"e":"serverShutdown","E":{self.core.clock.now_ms()}}}'.encode()
            await self._write([text_frame(payload)])
            await asyncio.sleep(close_after)
            await self.ws.close(1001, "server shutdown")
        except ConnectionClosed:
            pass

    # -- loops ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            await self._pump()
            if self.closing:  # a fault or a shutdown notice ends the connection in its own time
                await self.ws.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()

    async def _pump(self) -> None:
        core, loop = self.core, asyncio.get_running_loop()
        position = core.clock.now_ms()
        while not self.closing:
            now = core.clock.now_ms()
            core.market.ensure(now + 2 * MINUTE_MS)
            # A reader slower than the clock falls behind instead of being handed an ever larger batch.
            upto = min(now, position + MAX_BATCH_SPAN_MS)
            messages = self.collect(position, upto)
            position = upto
            if messages and not await self.send(messages):
                return
            if upto < now:
                await asyncio.sleep(0)
                continue
            wait = MAX_SLEEP
            lifetime = core.faults.ws_max_lifetime_seconds
            if lifetime:
                left = self.opened_at + lifetime - loop.time()
                if left <= 0:
                    self.closing = True
                    await self.ws.close(1000, "connection lifetime reached")
                    return
                wait = min(wait, left)
            upcoming = self.next_event_ms(position)
            if upcoming is not None:
                wait = min(wait, max(MIN_SLEEP, core.clock.seconds_until(upcoming)))
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), wait)
            except TimeoutError:
                pass

    async def _read(self) -> None:
        """Binance's live subscription requests; anything else is answered with an error and ignored."""
        try:
            async for message in self.ws:
                reply = self._request(message)
                if reply is not None:
                    await self.ws.send(json.dumps(reply, separators=(",", ":")))
        except ConnectionClosed:
            pass
        finally:
            # The client is gone: end the pump too, which otherwise only notices on its next send, and never
            # once the recording has run out (the server's stop would then wait for it forever).
            self.closing = True
            self.changed.set()

    def _request(self, message: str | bytes) -> dict | None:
        try:
            request = json.loads(message)
            method, request_id = request["method"], request.get("id")
            params = request.get("params", [])
        except (ValueError, KeyError, TypeError):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected an object with 'method'"}, "id": None}
        symbols = self.core.market.symbols
        try:
            if method == "SUBSCRIBE":
                for name in params:
                    stream = parse_stream(name, symbols)
                    if stream not in self.streams:
                        self.streams.append(stream)
                self.changed.set()
                return {"result": None, "id": request_id}
            if method == "UNSUBSCRIBE":
                gone = {parse_stream(name, symbols) for name in params}
                self.streams = [s for s in self.streams if s not in gone]
                return {"result": None, "id": request_id}
            if method == "LIST_SUBSCRIPTIONS":
                return {"result": [stream_name(s) for s in self.streams], "id": request_id}
        except (StreamNameError, TypeError) as exc:
            return {"error": {"code": 2, "msg": f"Invalid request: {exc}"}, "id": request_id}
        return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": request_id}


class StreamServer:
    """Glue between websockets' server and :class:`StreamConnection`."""

    def __init__(self, core: ReplayCore):
        self.core = core

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            connection.replay_route = parse_path(request.path, self.core.market.symbols)  # type: ignore[attr-defined]
        except StreamNameError as exc:
            return connection.respond(400, f"{exc}\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        streams, combined = ws.replay_route  # type: ignore[attr-defined]
        conn = StreamConnection(self.core, ws, streams, combined)
        self.core.ws_connections.add(conn)
        self.core.ws_connections_total += 1
        try:
            await conn.run()
        finally:
            self.core.ws_connections.discard(conn)
