"""Binance spot REST client for 1-minute klines (``GET /api/v3/klines``).

    client = ExchangeClient(settings.exchange)
    for page in client.klines("BTCUSDT", start, end):   # pages of <= 1000 rows, open_time in [start, end), UTC
        ...                                              # each page: a polars DataFrame in MINUTE_SCHEMA

The client keeps one keep-alive connection, stays inside the exchange's request-weight budget (it reads
``X-MBX-USED-WEIGHT-1M`` from every response and waits for the next window rather than exceed it), obeys 429
and 418 with their ``Retry-After`` (nothing is sent to the exchange before it has passed), and retries 5xx
answers, timeouts, dropped connections, bodies cut short and bodies that are not JSON with exponential backoff
and jitter, at most ``RetryPolicy.attempts`` times a request. When it gives up it raises
:class:`ExchangeError`, naming the request; a JSON answer that is not klines is such an error at once, naming
the kline and field.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Self
from urllib.parse import urlencode, urlsplit

import polars as pl

from crypto_assets.exchange.binance import (
    KLINES_PATH,
    KLINES_WEIGHT,
    MAX_KLINES_LIMIT,
    MINUTE_MS,
    TIME_UNIT_HEADER,
    USED_WEIGHT_HEADER,
    first_bad_kline,
    klines_to_frame,
)
from crypto_assets.schema import MINUTE_SCHEMA
from crypto_assets.settings import ExchangeSettings
from crypto_assets.validation import validate_symbol

__all__ = ["ExchangeClient", "ExchangeError", "RetryPolicy", "WeightBudget"]

TIME_PATH = "/api/v3/time"
PING_PATH = "/api/v3/ping"
TIME_WEIGHT = 1
USER_AGENT = "crypto-assets/0.1"
# Network failures that a fresh connection may cure.
TRANSIENT_ERRORS = (socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException, OSError)


class ExchangeError(RuntimeError):
    """A request failed for good. The message names the method, URL and parameters (the client sends no secrets).

    ``status`` is the last HTTP status (None after network errors); ``code`` is Binance's error code when the
    body had one (e.g. -1121 for an unknown symbol).
    """

    def __init__(self, message: str, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client tries before raising :class:`ExchangeError`."""

    attempts: int = 5  # tries of one request on 5xx, timeouts and connection errors
    backoff_seconds: float = 0.5  # first backoff; doubles each retry, with jitter
    backoff_max_seconds: float = 30.0
    rate_limited_attempts: int = 10  # 429/418 answers obeyed for one request before giving up
    max_wait_seconds: float = 600.0  # a longer Retry-After (a long IP ban) is an error, not a hang


class WeightBudget:
    """Request weight used in the exchange's current window (Binance: per minute, per IP).

    The server's ``X-MBX-USED-WEIGHT-1M`` header is the truth; between headers the client counts what it sent.
    Windows are aligned to multiples of ``window_seconds`` of Unix time, as Binance's are to the minute.
    """

    def __init__(self, limit: int, window_seconds: float = 60.0, clock: Callable[[], float] = time.time):
        if limit < 1:
            raise ValueError(f"weight limit must be positive, got {limit}")
        self.limit = limit
        self.window_seconds = window_seconds
        self.clock = clock
        self.window = -1
        self.used = 0
        self.blocked_until = 0.0  # after a 429/418, nothing is sent before this (Unix time)

    def _index(self, now: float) -> int:
        return math.floor(now / self.window_seconds)

    def delay(self, weight: int) -> float:
        """Seconds to wait before a request of ``weight`` fits in the budget (0 when it fits now)."""
        now = self.clock()
        wait = max(0.0, self.blocked_until - now)
        index = self._index(now)
        if index == self.window and self.used + weight > self.limit:
            # A small margin keeps a client whose clock runs slightly ahead out of the old window.
            wait = max(wait, (index + 1) * self.window_seconds - now + min(0.25, self.window_seconds / 20))
        return wait

    def spend(self, weight: int) -> None:
        index = self._index(self.clock())
        if index != self.window:
            self.window, self.used = index, 0
        self.used += weight

    def observe(self, used: int) -> None:
        """The server's count for the current window."""
        self.window, self.used = self._index(self.clock()), used

    def block_for(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self.clock() + seconds)


class ExchangeClient:
    """A Binance spot REST client for klines; usable as a context manager that closes its connection.

    ``settings`` supplies ``rest_url`` (scheme, host, port and an optional path prefix),
    ``weight_limit_per_minute`` and ``timeout_seconds`` (per socket operation). ``microseconds=True`` asks
    for µs timestamps (``X-MBX-TIME-UNIT: MICROSECOND``); the pages are the same either way.
    ``weight_window_seconds`` is the length of the server's weight window (60 for Binance; the replay server's
    is configurable so tests need not wait a minute).
    """

    def __init__(
        self,
        settings: ExchangeSettings,
        *,
        retry: RetryPolicy | None = None,
        weight_window_seconds: float = 60.0,
        microseconds: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ):
        parts = urlsplit(settings.rest_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"exchange.rest_url must be an http(s) URL, got {settings.rest_url!r}")
        self.base_url = settings.rest_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.timeout = settings.timeout_seconds
        self.retry = retry or RetryPolicy()
        self.budget = WeightBudget(settings.weight_limit_per_minute, weight_window_seconds)
        self.microseconds = microseconds
        self._sleep = sleep
        self._conn: http.client.HTTPConnection | None = None
        self.requests_sent = 0

    # -- public API ---------------------------------------------------------------------------------------

    def klines(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        progress: Callable[[int], None] | None = None,
        closed_only: bool = True,
    ) -> Iterator[pl.DataFrame]:
        """Yield the 1-minute klines of ``symbol`` with open_time in [start, end) as pages in ``MINUTE_SCHEMA``.

        Pages are at most 1000 rows, in time order, never empty. Stretches where the exchange has no candles
        (outages) are skipped, and the iteration ends when the exchange has nothing more before ``end``.
        With ``closed_only`` (the default) the candle still forming at the exchange's current time is left
        out, so every row is final; that costs one ``/api/v3/time`` request per call.
        ``progress(rows)`` is called after each page with the number of rows it holds.
        """
        symbol = validate_symbol(symbol)
        start_ms, end_ms = _epoch_ms(start), _epoch_ms(end)
        if closed_only and end_ms > start_ms:
            end_ms = min(end_ms, self.server_time_ms() // MINUTE_MS * MINUTE_MS)
        cursor = start_ms
        while cursor < end_ms:
            params = {
                "symbol": symbol,
                "interval": "1m",
                "startTime": cursor,
                "endTime": end_ms - 1,
                "limit": MAX_KLINES_LIMIT,
            }
            rows = self._get_json(KLINES_PATH, params, KLINES_WEIGHT)
            if isinstance(rows, list) and not rows:
                return
            try:
                frame = klines_to_frame(rows, symbol)
                last_ms = _to_ms(rows[-1][0])
            except Exception as exc:  # a JSON answer that is not klines: name the request and the bad field
                problem = first_bad_kline(rows) or f"{type(exc).__name__}: {exc}"
                raise ExchangeError(f"GET {self._url(KLINES_PATH, params)}: not a klines answer: {problem}") from exc
            page = frame.filter((pl.col("open_time") >= _as_utc(start)) & (pl.col("open_time") < _from_ms(end_ms)))
            if last_ms < cursor:
                raise ExchangeError(
                    f"GET {self._url(KLINES_PATH, params)}: the exchange answered with klines before startTime"
                )
            if page.height:
                yield page
                if progress is not None:
                    progress(page.height)
            cursor = last_ms + MINUTE_MS

    def klines_frame(self, symbol: str, start: datetime, end: datetime, **kwargs) -> pl.DataFrame:
        """All pages of :meth:`klines` in one frame."""
        pages = list(self.klines(symbol, start, end, **kwargs))
        return pl.concat(pages) if pages else pl.DataFrame(schema=MINUTE_SCHEMA)

    def server_time_ms(self) -> int:
        """The exchange's clock (``GET /api/v3/time``) in epoch milliseconds."""
        body = self._get_json(TIME_PATH, {}, TIME_WEIGHT)
        try:
            return _to_ms(body["serverTime"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExchangeError(f"GET {self._url(TIME_PATH, {})}: no serverTime in {str(body)[:200]!r}") from exc

    def ping(self) -> None:
        """``GET /api/v3/ping``; raises :class:`ExchangeError` when the exchange cannot be reached."""
        self._get_json(PING_PATH, {}, 1)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------------------

    def _url(self, path: str, params: Mapping[str, object]) -> str:
        return f"{self.base_url}{path}" + (f"?{urlencode(params)}" if params else "")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = kind(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _send(self, target: str) -> tuple[int, Mapping[str, str], bytes]:
        conn = self._connection()
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.microseconds:
            headers[TIME_UNIT_HEADER] = "MICROSECOND"
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except BaseException:
            self.close()  # a half-read response poisons the connection
            raise
        if response.will_close:
            self.close()
        return response.status, response.headers, body

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.retry.backoff_max_seconds, self.retry.backoff_seconds * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _get_json(self, path: str, params: Mapping[str, object], weight: int) -> object:
        url = self._url(path, params)
        target = self._prefix + path + (f"?{urlencode(params)}" if params else "")
        failures = rate_limited = 0
        while True:
            wait = self.budget.delay(weight)
            if wait > 0:
                self._sleep(wait)
            self.budget.spend(weight)
            self.requests_sent += 1
            try:
                status, headers, body = self._send(target)
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise ExchangeError(
                        f"GET {url} failed after {failures} attempts: {type(exc).__name__}: {exc}"
                    ) from exc
                self._sleep(self._backoff(failures))
                continue

            used = headers.get(USED_WEIGHT_HEADER)
            if used is not None and used.strip().isdigit():
                self.budget.observe(int(used))

            if status in (429, 418):
                rate_limited += 1
                retry_after = _retry_after(headers, default=1.0 if status == 429 else 60.0)
                what = "IP banned (418)" if status == 418 else "rate limited (429)"
                if retry_after > self.retry.max_wait_seconds:
                    raise ExchangeError(
                        f"GET {url}: {what}, Retry-After {retry_after:g}s is longer than the client waits "
                        f"({self.retry.max_wait_seconds:g}s): {_describe(body)}",
                        status,
                        _error_code(body),
                    )
                if rate_limited >= self.retry.rate_limited_attempts:
                    raise ExchangeError(
                        f"GET {url}: {what}, Retry-After {retry_after:g}s; gave up after {rate_limited} such answers: "
                        f"{_describe(body)}",
                        status,
                        _error_code(body),
                    )
                self.budget.block_for(retry_after)
                continue
            if status >= 500:
                failures += 1
                if failures >= self.retry.attempts:
                    raise ExchangeError(
                        f"GET {url} failed after {failures} attempts: HTTP {status}: {_describe(body)}",
                        status,
                        _error_code(body),
                    )
                self._sleep(self._backoff(failures))
                continue
            if status >= 400:
                raise ExchangeError(f"GET {url}: HTTP {status}: {_describe(body)}", status, _error_code(body))
            try:
                return json.loads(body)
            except ValueError as exc:
                # A body cut short or garbled on the way (a proxy, a dropped connection behind it): ask again.
                failures += 1
                if failures >= self.retry.attempts:
                    raise ExchangeError(
                        f"GET {url} failed after {failures} attempts: HTTP {status} with a body that is not JSON "
                        f"({len(body):,} bytes): {body[:200]!r}",
                        status,
                    ) from exc
                self._sleep(self._backoff(failures))


def _retry_after(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def _error_code(body: bytes) -> int | None:
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _describe(body: bytes) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "code" in data:
            return f"code {data['code']}: {data.get('msg', '')}"
    except ValueError:
        pass
    return body[:200].decode("utf-8", errors="replace") or "(empty body)"


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _epoch_ms(moment: datetime) -> int:
    """Epoch ms, rounded up so that a start in the middle of a millisecond never reaches back before it."""
    delta = _as_utc(moment) - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return -(-micros // 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _to_ms(value: object) -> int:
    """Epoch ms from a time the exchange sent in ms or µs."""
    number = int(value)
    return number // 1000 if abs(number) >= 10**14 else number
