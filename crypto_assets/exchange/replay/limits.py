"""Binance's request-weight limit as the replay enforces it, per client IP.

Each window (60 s by default, aligned to Unix time like Binance's minutes) allows ``limit`` weight. A request
over the budget gets 429 with ``Retry-After`` (seconds to the next window); a request sent before that
Retry-After has passed gets 418 and bans the IP for ``ban_seconds``, as Binance does with clients that keep
sending after a 429.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

GRACE_SECONDS = 0.05  # a client that waited Retry-After is never banned for clock rounding


@dataclass
class _Ip:
    window: int = -1
    used: int = 0
    retry_until: float = 0.0
    banned_until: float = 0.0


@dataclass(frozen=True)
class Admission:
    status: int  # 200 to go ahead, 429 or 418
    used: int  # weight used in the current window, for X-MBX-USED-WEIGHT-1M
    retry_after: int = 0


class WeightLimiter:
    def __init__(
        self,
        limit: int = 6000,
        window_seconds: float = 60.0,
        ban_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
    ):
        self.limit = limit
        self.window_seconds = window_seconds
        self.ban_seconds = ban_seconds
        self.clock = clock
        self._ips: dict[str, _Ip] = {}

    def _state(self, ip: str, now: float) -> _Ip:
        state = self._ips.setdefault(ip, _Ip())
        window = math.floor(now / self.window_seconds)
        if window != state.window:
            state.window, state.used = window, 0
        return state

    def admit(self, ip: str, weight: int) -> Admission:
        now = self.clock()
        state = self._state(ip, now)
        if state.banned_until - GRACE_SECONDS > now:
            return Admission(418, state.used, math.ceil(state.banned_until - now))
        if state.retry_until - GRACE_SECONDS > now:
            state.banned_until = now + self.ban_seconds
            return Admission(418, state.used, math.ceil(self.ban_seconds))
        state.used += weight
        if state.used > self.limit:
            window_end = (state.window + 1) * self.window_seconds
            state.retry_until = window_end
            return Admission(429, state.used, max(1, math.ceil(window_end - now)))
        return Admission(200, state.used)

    def ban(self, ip: str, seconds: float) -> None:
        """A 418 was sent for another reason (an injected fault): the IP is banned for ``seconds``."""
        state = self._state(ip, self.clock())
        state.banned_until = max(state.banned_until, self.clock() + seconds)

    def told_to_wait(self, ip: str, seconds: float) -> None:
        """A 429 was sent for another reason (an injected fault): the same Retry-After rule applies."""
        state = self._state(ip, self.clock())
        state.retry_until = max(state.retry_until, self.clock() + seconds)

    def used(self, ip: str) -> int:
        return self._state(ip, self.clock()).used
