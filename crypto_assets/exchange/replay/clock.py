"""The replay clock: exchange time that runs at ``speed`` times real time from ``start``, shared by every
connection of a replay server."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime


class ReplayClock:
    def __init__(self, start_ms: int, speed: float = 1.0, monotonic: Callable[[], float] = time.monotonic):
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.start_ms = int(start_ms)
        self.speed = float(speed)
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now_ms(self) -> int:
        """Exchange time in epoch milliseconds."""
        return self.start_ms + int((self._monotonic() - self._t0) * 1000.0 * self.speed)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    def seconds_until(self, at_ms: int) -> float:
        """Real seconds until the clock shows ``at_ms`` (0 when it already has)."""
        return max(0.0, (at_ms - self.now_ms()) / 1000.0 / self.speed)
