"""Running 1-minute candles and daily OHLCV for one symbol, folded event by event (pure Python + Polars).

How events feed a candle:

* A kline update carries the exchange's own running candle (every trade up to its event time ``E`` already
  folded in), so it replaces the candle for its minute. The update with ``x=true`` is the final candle and
  is never changed afterwards: the written candle equals the exchange's recorded one exactly.
* A trade newer than the minute's latest kline update moves the open candle forward between kline updates
  (high/low widened, close set, quantity added); a minute's first trade opens a candle. The next kline
  update supersedes whatever trades added, so a trade can never be counted twice in the final candle.
* An older or duplicate kline update, and anything for a final minute, is ignored.
* Late data: per symbol, events older than the newest event time seen minus the watermark delay are
  dropped and counted. A day leaves the state once the watermark has passed its end by a minute; events
  for a day that left are late too.

The daily row of a day is :func:`crypto_assets.batch.transforms.daily.aggregate_daily` over the day's
current candles (including the open minute), so speed and batch layers aggregate the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl

from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.schema import OHLCV

MINUTE_MS = 60_000
DAY_MS = 86_400_000
EVICT_SLACK_MS = MINUTE_MS  # a day's final kline arrives just after midnight

# Per minute: open, high, low, close, volume, is_closed, event_ms (newest folded), kline_ms (newest kline E).
O, H, L, C, V, CLOSED, EVENT, KLINE = range(8)


@dataclass
class CandleBook:
    """The candles of the days a symbol still accepts events for."""

    symbol: str
    minutes: dict[int, list] = field(default_factory=dict)
    max_event_ms: int = -1
    kept_from_ms: int = 0  # minutes before this day start were evicted; events for them are late

    def apply(self, events: Iterable[tuple], delay_ms: int) -> tuple[set[int], int]:
        """Fold events ``(kind, minute_ms, open, high, low, close, volume, is_closed, event_ms)`` sorted in
        exchange time (``streaming_sensor.folding.EVENT_ORDER``); returns the minutes touched and the number of late events dropped."""
        watermark = self.max_event_ms - delay_ms if self.max_event_ms >= 0 else None
        touched: set[int] = set()
        late = 0
        newest = self.max_event_ms
        for kind, minute, o, h, lo, c, v, closed, event in events:
            if (watermark is not None and event < watermark) or minute < self.kept_from_ms:
                late += 1
                continue
            newest = max(newest, event)
            candle = self.minutes.get(minute)
            if kind == "kline":
                if candle is not None and (candle[CLOSED] or candle[KLINE] > event):
                    continue
                self.minutes[minute] = [
                    o,
                    h,
                    lo,
                    c,
                    v,
                    bool(closed),
                    max(event, candle[EVENT]) if candle else event,
                    event,
                ]
            else:
                if candle is None:
                    self.minutes[minute] = [o, h, lo, c, v, False, event, -1]
                elif candle[CLOSED] or event <= candle[KLINE]:
                    continue  # already inside the exchange's candle
                else:
                    candle[H] = max(candle[H], h)
                    candle[L] = min(candle[L], lo)
                    candle[C] = c
                    candle[V] += v
                    candle[EVENT] = max(candle[EVENT], event)
            touched.add(minute)
        self.max_event_ms = newest
        return touched, late

    def evict(self, delay_ms: int) -> None:
        """Forget days the watermark has passed; their candles and daily rows are already written."""
        if self.max_event_ms < 0:
            return
        watermark = self.max_event_ms - delay_ms
        first_open_day = (watermark - EVICT_SLACK_MS) // DAY_MS * DAY_MS
        if first_open_day > self.kept_from_ms:
            self.kept_from_ms = first_open_day
            self.minutes = {m: c for m, c in self.minutes.items() if m >= first_open_day}

    def candles(self, minutes: Iterable[int]) -> pl.DataFrame:
        chosen = sorted(minutes)
        rows = [self.minutes[m] for m in chosen]
        return pl.DataFrame(
            {
                "symbol": [self.symbol] * len(chosen),
                "minute_ms": chosen,
                "open": [r[O] for r in rows],
                "high": [r[H] for r in rows],
                "low": [r[L] for r in rows],
                "close": [r[C] for r in rows],
                "volume": [r[V] for r in rows],
                "is_closed": [r[CLOSED] for r in rows],
                "event_ms": [r[EVENT] for r in rows],
            },
            schema={
                "symbol": pl.String,
                "minute_ms": pl.Int64,
                "open": pl.Float64,
                "high": pl.Float64,
                "low": pl.Float64,
                "close": pl.Float64,
                "volume": pl.Float64,
                "is_closed": pl.Boolean,
                "event_ms": pl.Int64,
            },
        ).with_columns(open_time=pl.from_epoch("minute_ms", time_unit="ms").dt.replace_time_zone("UTC"))

    def daily(self, minutes: Iterable[int]) -> pl.DataFrame:
        """Daily rows for the days of ``minutes``, over every candle of those days in the book."""
        days = {m // DAY_MS * DAY_MS for m in minutes}
        members = [m for m in self.minutes if m // DAY_MS * DAY_MS in days]
        frame = self.candles(members)
        newest = frame.group_by(pl.col("open_time").dt.date().alias("date")).agg(pl.col("event_ms").max())
        return aggregate_daily(frame.lazy()).collect().join(newest, on="date", how="left")

    # The book travels between micro-batches as Spark group state: one JSON text of its columns.
    def to_state(self) -> str:
        keys = sorted(self.minutes)
        rows = [self.minutes[m] for m in keys]
        columns = {name: [r[i] for r in rows] for i, name in enumerate(STATE_COLUMNS)}
        return json.dumps(
            {"minute_ms": keys, **columns, "max_event_ms": self.max_event_ms, "kept_from_ms": self.kept_from_ms},
            separators=(",", ":"),
        )

    @classmethod
    def from_state(cls, symbol: str, state: str | None) -> CandleBook:
        if not state:
            return cls(symbol)
        data = json.loads(state)
        columns = [data[name] for name in STATE_COLUMNS]
        minutes = {int(k): [col[i] for col in columns] for i, k in enumerate(data["minute_ms"])}
        return cls(symbol, minutes, int(data["max_event_ms"]), int(data["kept_from_ms"]))


STATE_COLUMNS = (*OHLCV, "is_closed", "event_ms", "kline_ms")  # order of O..KLINE
