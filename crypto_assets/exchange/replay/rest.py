"""The replay's REST side: a small HTTP/1.1 server (keep-alive) answering like Binance spot.

* ``GET /api/v3/klines`` — symbol, interval (``1m``), startTime, endTime, limit (default 500, max 1000), with
  Binance's semantics: without times the most recent candles; with startTime the oldest from it; with endTime
  only the most recent up to it; with both, from startTime but not beyond endTime. Only candles that opened
  at or before the replay clock exist; the one still forming is served as formed so far.
  ``X-MBX-TIME-UNIT: MICROSECOND`` switches times to µs. Weight 2.
* ``GET /api/v3/time`` (``{"serverTime": ...}``, the replay clock) and ``GET /api/v3/ping`` (``{}``), weight 1.
* Every ``/api/`` answer carries ``X-MBX-USED-WEIGHT-1M``; over the budget → 429, sending again before
  Retry-After → 418 (see :mod:`.limits`). Errors are Binance's JSON, e.g. ``{"code":-1121,"msg":"Invalid symbol."}``.
* Control (not Binance): ``GET /_replay/status``, ``GET|POST /_replay/faults``, ``POST /_replay/faults/clear``.
  A control POST must be ``Content-Type: application/json`` with a loopback ``Host`` (else 415 / 403), so a web
  page in the user's browser cannot set faults.
* Faults (:mod:`.faults`): 418 bans, 429s, 5xx answers, connections cut before the answer or halfway through
  its body, bodies that are not JSON, and slow answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from crypto_assets.exchange.binance import (
    DEFAULT_KLINES_LIMIT,
    KLINES_PATH,
    KLINES_WEIGHT,
    MAX_KLINES_LIMIT,
    TIME_UNIT_HEADER,
    USED_WEIGHT_HEADER,
)
from crypto_assets.exchange.replay.core import ReplayCore
from crypto_assets.exchange.replay.encode import klines_json

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
Reply = tuple[int, list[tuple[str, str]], bytes]


class BinanceError(Exception):
    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _json(status: int, value: object, headers: list[tuple[str, str]] | None = None) -> Reply:
    return status, headers or [], json.dumps(value, separators=(",", ":")).encode()


def _error(status: int, code: int, msg: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return _json(status, {"code": code, "msg": msg}, headers)


def _mandatory(name: str) -> BinanceError:
    return BinanceError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _time_param(params: dict[str, str], name: str) -> int | None:
    """startTime/endTime in ms or µs (Binance accepts both); returned in ms."""
    if name not in params:
        return None
    text = params[name]
    if not text.lstrip("-").isdigit():
        raise BinanceError(
            400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        )
    value = int(text)
    return value // 1000 if value >= 10**14 else value


class _Cut(Exception):
    """Cut the connection instead of answering; with ``partial``, after sending its head and half its body."""

    def __init__(self, partial: Reply | None = None):
        super().__init__("connection cut")
        self.partial = partial


class RestApi:
    def __init__(self, core: ReplayCore):
        self.core = core

    # -- HTTP/1.1 -------------------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = peer[0] if peer else "?"
        self.core.rest_connections.add(writer)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    break
                try:
                    method, target, version = request_line.decode("latin-1").split()
                except ValueError:
                    await self._write(writer, (400, [], b"bad request line"), keep_alive=False)
                    break
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length > MAX_BODY:
                    await self._write(writer, (413, [], b"body too large"), keep_alive=False)
                    break
                body = await reader.readexactly(length) if length else b""
                keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                try:
                    reply = await self.respond(method, target, headers, body, ip)
                except _Cut as cut:  # an injected fault: no (complete) answer, no close handshake
                    if cut.partial is not None:
                        await self._write(writer, cut.partial, keep_alive, truncate=True)
                    writer.transport.abort()
                    break
                except Exception:  # a bug must not take the server down; the client sees a 500
                    log.exception("replay REST handler failed for %s %s", method, target)
                    reply = _error(500, -1000, "An unknown error occurred while processing the request.")
                await self._write(writer, reply, keep_alive)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self.core.rest_connections.discard(writer)
            writer.close()

    async def _write(
        self, writer: asyncio.StreamWriter, reply: Reply, keep_alive: bool, truncate: bool = False
    ) -> None:
        """Send ``reply``; with ``truncate`` the head announces the whole body but only half of it follows."""
        status, headers, body = reply
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        is_json = body[:1] in (b"{", b"[")
        head = [
            f"HTTP/1.1 {status} {phrase}",
            f"Content-Type: {'application/json;charset=UTF-8' if is_json else 'text/plain; charset=utf-8'}",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            *[f"{k}: {v}" for k, v in headers],
        ]
        writer.write(
            ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body[: len(body) // 2] if truncate else body)
        )
        await writer.drain()

    # -- routing ----------------------------------------------------------------------------------------------

    async def respond(self, method: str, target: str, headers: dict[str, str], body: bytes, ip: str) -> Reply:
        url = urlsplit(target)
        path = url.path
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        core = self.core
        if path.startswith("/_replay/"):
            return self._control(method, path, headers, body)
        if not path.startswith("/api/"):
            return _error(404, -1000, f"Unknown path {path}.")
        if method != "GET":
            return _error(405, -1000, f"Method {method} is not allowed on {path}.")

        weight = KLINES_WEIGHT if path == KLINES_PATH else 1
        admission = core.limiter.admit(ip, weight)
        used = [(USED_WEIGHT_HEADER, str(admission.used))]
        if admission.status == 418:
            core.count(418)
            ban = "Way too much request weight used; IP banned until {}. Please use WebSocket Streams for live updates to avoid bans."
            banned_until = core.wall_ms() + admission.retry_after * 1000
            return _error(418, -1003, ban.format(banned_until), used + [("Retry-After", str(admission.retry_after))])
        if admission.status == 429:
            core.count(429)
            msg = (
                f"Too much request weight used; current limit is {core.limiter.limit} request weight per "
                f"{core.limiter.window_seconds:g} SECOND. Please use WebSocket Streams for live updates to avoid polling the API."
            )
            return _error(429, -1003, msg, used + [("Retry-After", str(admission.retry_after))])

        faults = core.faults
        if faults.rest_418 > 0:
            faults.rest_418 -= 1
            seconds = faults.rest_418_retry_after
            core.limiter.ban(ip, seconds)
            core.count(418)
            msg = f"Way too much request weight used; IP banned until {core.wall_ms() + seconds * 1000}."
            return _error(418, -1003, msg, used + [("Retry-After", str(seconds))])
        if faults.rest_429 > 0:
            faults.rest_429 -= 1
            core.limiter.told_to_wait(ip, faults.rest_429_retry_after)
            core.count(429)
            return _error(
                429, -1003, "Too many requests queued.", used + [("Retry-After", str(faults.rest_429_retry_after))]
            )
        if faults.rest_5xx > 0:
            faults.rest_5xx -= 1
            core.count(faults.rest_5xx_status)
            return _error(
                faults.rest_5xx_status, -1001, "Internal error; unable to process your request. Please try again.", used
            )
        if faults.rest_drop > 0:
            faults.rest_drop -= 1
            core.count_cut("dropped")
            raise _Cut()
        delay = faults.take_rest_delay()
        if delay:
            await asyncio.sleep(delay)

        micro = headers.get(TIME_UNIT_HEADER.lower(), "").upper() == "MICROSECOND"
        try:
            if path == KLINES_PATH:
                reply = 200, used, self._klines(params, micro)
            elif path == "/api/v3/time":
                now = core.clock.now_ms()
                reply = _json(200, {"serverTime": now * 1000 if micro else now}, used)
            elif path == "/api/v3/ping":
                reply = _json(200, {}, used)
            else:
                reply = _error(404, -1000, f"Unknown path {path}.", used)
        except BinanceError as exc:
            reply = _error(exc.status, exc.code, exc.msg, used)
        if faults.rest_truncate > 0:
            faults.rest_truncate -= 1
            core.count_cut("truncated")
            raise _Cut(reply)
        if faults.rest_malformed > 0:
            faults.rest_malformed -= 1
            core.count_cut("malformed")
            status, reply_headers, reply_body = reply
            reply = status, reply_headers, reply_body[: len(reply_body) // 2]  # '[' or '{' at the least: never JSON
        core.count(reply[0])
        return reply

    def _klines(self, params: dict[str, str], micro: bool) -> bytes:
        core = self.core
        symbol = params.get("symbol", "")
        if not symbol:
            raise _mandatory("symbol")
        if symbol not in core.market.candles:
            raise BinanceError(400, -1121, "Invalid symbol.")
        interval = params.get("interval", "")
        if not interval:
            raise _mandatory("interval")
        if interval != "1m":
            raise BinanceError(400, -1120, "Invalid interval.")
        limit_text = params.get("limit", str(DEFAULT_KLINES_LIMIT))
        if not limit_text.isdigit():
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1-1000'.")
        limit = int(limit_text)
        if not 1 <= limit <= MAX_KLINES_LIMIT:
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1-1000'.")
        start, end = _time_param(params, "startTime"), _time_param(params, "endTime")
        if start is not None and end is not None and start > end:
            raise BinanceError(400, -1023, "Start time is greater than end time.")

        clock_ms = core.clock.now_ms()
        core.market.ensure(clock_ms)
        candles = core.market.candles[symbol]
        newest = clock_ms if end is None else min(end, clock_ms)  # the exchange cannot serve the future
        hi = int(np.searchsorted(candles.open_ms, newest, side="right"))
        if start is not None:
            lo = int(np.searchsorted(candles.open_ms, start, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        return klines_json(candles, lo, max(lo, hi), clock_ms, core.trades_per_minute, micro)

    # -- control --------------------------------------------------------------------------------------------

    def _control(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        core = self.core
        if method == "POST":
            refused = control_refusal(headers)
            if refused is not None:
                return refused
        if path == "/_replay/status" and method == "GET":
            return _json(200, core.status())
        if path == "/_replay/faults" and method == "GET":
            return _json(200, core.faults.as_dict())
        if path == "/_replay/faults/clear" and method == "POST":
            core.faults.clear()
            return _json(200, core.faults.as_dict())
        if path == "/_replay/faults" and method == "POST":
            try:
                values = json.loads(body or b"{}")
                if not isinstance(values, dict):
                    raise TypeError("expected a JSON object")
                core.apply_faults(values)
            except (TypeError, ValueError) as exc:
                return _json(400, {"error": str(exc)})
            return _json(200, core.faults.as_dict())
        return _json(404, {"error": f"no control endpoint {method} {path}"})


LOOPBACK_HOSTS = {"localhost"}


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:80' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def control_refusal(headers: dict[str, str]) -> Reply | None:
    """Why a POST to a control endpoint is refused, or None.

    A web page open in the user's browser can send a cross-site POST to 127.0.0.1, but only as a "simple"
    request (a form's content type, no preflight) and, through DNS rebinding, with its own host name: requiring
    ``application/json`` and a loopback Host header shuts both doors.
    """
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        return _json(
            415, {"error": f"control requests must be Content-Type: application/json, not {content_type or 'none'!r}"}
        )
    host = _host_name(headers.get("host", ""))
    if not _is_loopback(host):
        return _json(
            403,
            {
                "error": f"control requests must name a loopback Host (127.0.0.1, localhost, [::1]), not {host or 'none'!r}"
            },
        )
    return None
