"""Faults a replay server injects on request, for tests of clients that must survive a real exchange.

REST faults answer the next N ``/api/`` requests (after the weight limit has counted them, as Binance
counts every request it receives), checked in this order: 418 ban, 429, 5xx, dropped connection, delay,
then a truncated or malformed body. WebSocket faults act on the next messages sent.

State faults (counts and settings) are set with :meth:`Faults.update` from the Python API or with
``POST /_replay/faults`` and a JSON object of the same fields; one-off actions (drop every WebSocket now,
announce ``serverShutdown`` and close) are methods of the server, also reachable through that endpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Faults:
    rest_429: int = 0  # the next N REST answers are 429 with Retry-After
    rest_429_retry_after: int = 1  # seconds
    rest_418: int = 0  # the next N REST answers are 418 and ban the IP for rest_418_retry_after seconds: a request
    rest_418_retry_after: int = 2  # sent during the ban gets 418 again (Binance's answer to a client that hammers)
    rest_5xx: int = 0  # the next N REST answers are server errors
    rest_5xx_status: int = 503
    rest_drop: int = 0  # the next N REST requests are read and the connection is cut without an answer
    rest_truncate: int = 0  # the next N REST answers send the headers and half the body, then cut the connection
    rest_malformed: int = 0  # the next N REST answers are 200 with a body that is not JSON (the real one cut short)
    rest_delay_ms: int = 0  # REST answers wait this long first ...
    rest_delay_count: int = 0  # ... for the next N answers (0: every answer while rest_delay_ms > 0)
    ws_drop_after: int = 0  # the connection that sends the Nth next WebSocket message is then cut (no close frame)
    ws_malformed: int = 0  # the next N WebSocket messages sent are preceded by a message that is not JSON
    ws_max_lifetime_seconds: float = 0.0  # connections are closed after this long (0: never; Binance: 24 h)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def update(self, **values: object) -> None:
        """Set fields by name; an unknown name or a negative value is a ValueError naming it."""
        known = {f.name: f for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
            kind = float if name == "ws_max_lifetime_seconds" else int
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"fault {name!r}: expected a number >= 0, got {value!r}")
            setattr(self, name, kind(value))
        if not 500 <= self.rest_5xx_status <= 599:
            raise ValueError(f"fault 'rest_5xx_status': expected 500..599, got {self.rest_5xx_status}")

    def clear(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def take_rest_delay(self) -> float:
        """Seconds the next REST answer waits."""
        if self.rest_delay_ms <= 0:
            return 0.0
        delay = self.rest_delay_ms / 1000.0
        if self.rest_delay_count:
            self.rest_delay_count -= 1
            if not self.rest_delay_count:
                self.rest_delay_ms = 0
        return delay
