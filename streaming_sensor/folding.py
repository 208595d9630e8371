"""The candle state across micro-batches: one :class:`~streaming_sensor.candles.CandleBook` per symbol, folded
on the driver inside the stream job's foreachBatch and snapshotted per batch id inside Spark's checkpoint.

Exactly-once: batch N always starts from the snapshot of the newest batch before N. A batch that Spark replays
after a crash (same id, same offsets) therefore starts from the same state and writes the same rows. The
snapshot of N is written after N's files and log line and before Spark records N as committed, so the
snapshots never run ahead of Spark's offset log: a snapshot above the newest planned batch can only be left
over from something else and is removed when the job starts (:meth:`CandleFolder.reconcile`).

The state lives in ``<checkpoint>/candle_state/``, so deleting the checkpoint (a reset) deletes it too.

Besides the books, the state holds the missed stretches still waiting for their end: after Kafka lost data
(``@reset_from`` in the batch's offsets, see :mod:`streaming_sensor.kafka_source`) each symbol's stretch runs
from the newest event time folded before the loss to the first newer event time read after it. A symbol with
no such event in the batch keeps its stretch pending until one arrives.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import write_text_atomic
from streaming_sensor.batch_writer import BAD, CANDLE, DAILY_ROW, LATE, normalize_rows
from streaming_sensor.candles import CandleBook

log = logging.getLogger(__name__)

KEEP_SNAPSHOTS = 5
STATE_DIR = "candle_state"
EVENT_ORDER = ["event_ms", "kind_rank", "topic", "partition", "offset"]


def state_dir(checkpoint: Path) -> Path:
    return checkpoint / STATE_DIR


def _utc(column: str) -> pl.Expr:
    return pl.from_epoch(column, time_unit="ms").dt.replace_time_zone("UTC")


def bad_rows(events: pl.DataFrame) -> pl.DataFrame:
    bad = events.filter(pl.col("reason").is_not_null())
    return bad.select(
        pl.lit(BAD).alias("kind"),
        "symbol",
        "topic",
        "partition",
        "offset",
        pl.concat_str([pl.col("reason"), pl.lit(" | value: "), pl.col("raw").fill_null("")]).alias("reason"),
    )


def fold_book(book: CandleBook, events: pl.DataFrame, delay_ms: int) -> list[pl.DataFrame]:
    """Fold one symbol's good events of a batch into its book; output rows (candles, daily, late count)."""
    ordered = events.with_columns(kind_rank=(pl.col("kind") == "kline").cast(pl.Int8)).sort(EVENT_ORDER)
    columns = ("kind", "minute_ms", "open", "high", "low", "close", "volume", "is_closed", "event_ms")
    touched, late = book.apply(zip(*(ordered[c].to_list() for c in columns), strict=True), delay_ms)
    out: list[pl.DataFrame] = []
    if touched:
        out.append(
            book.candles(touched).select(
                pl.lit(CANDLE).alias("kind"),
                "symbol",
                "open_time",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "is_closed",
                _utc("event_ms").alias("event_time"),
            )
        )
        out.append(
            book.daily(touched).select(
                pl.lit(DAILY_ROW).alias("kind"),
                "symbol",
                "date",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "minute_count",
                _utc("event_ms").alias("event_time"),
            )
        )
    if late:
        out.append(pl.DataFrame({"kind": [LATE], "symbol": [book.symbol], "dropped": [late]}))
    book.evict(delay_ms)
    return out


@dataclass(frozen=True)
class Gap:
    """A stretch of exchange time the stream did not see for one symbol: ``from_ms`` is known, the end not yet."""

    id: str
    symbol: str
    from_ms: int
    reason: str


@dataclass(frozen=True)
class ClosedGap:
    id: str
    symbol: str
    from_ms: int
    to_ms: int
    reason: str


@dataclass
class _State:
    books: dict[str, CandleBook]
    gaps: dict[str, Gap]

    def to_json(self) -> str:
        return json.dumps(
            {
                "books": {symbol: book.to_state() for symbol, book in sorted(self.books.items())},
                "gaps": {symbol: gap.__dict__ for symbol, gap in sorted(self.gaps.items())},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> _State:
        data = json.loads(text)
        books = {symbol: CandleBook.from_state(symbol, state) for symbol, state in data["books"].items()}
        return cls(books, {symbol: Gap(**gap) for symbol, gap in data.get("gaps", {}).items()})


def snapshot_ids(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.stem) for p in directory.glob("*.json") if p.stem.isdigit())


class CandleFolder:
    def __init__(self, state_dir: Path, delay_ms: int):
        self.state_dir = state_dir
        self.delay_ms = delay_ms
        self._state = _State({}, {})
        self._after: int | None = None  # the batch id the in-memory state is the state after
        self._pending: tuple[int, _State] | None = None

    def _snapshot(self, batch_id: int) -> Path:
        return self.state_dir / f"{batch_id:012d}.json"

    def reconcile(self, last_planned: int | None, last_committed: int | None) -> None:
        """Make the snapshots agree with Spark's checkpoint at start-up.

        ``last_planned`` is the newest batch id in Spark's offset log, ``last_committed`` the newest in its
        commit log. Snapshots above ``last_planned`` belong to no batch of this checkpoint and are removed; a
        committed batch without a snapshot at or below it means the candle state is lost (it is rebuilt from
        the events that follow, and the open days' daily rows are incomplete until they close), which is
        logged as an error.
        """
        for batch_id in snapshot_ids(self.state_dir):
            if last_planned is None or batch_id > last_planned:
                log.warning("removing candle-state snapshot %d: Spark's checkpoint has no such batch", batch_id)
                self._snapshot(batch_id).unlink(missing_ok=True)
        if last_committed is not None and not any(i <= last_committed for i in snapshot_ids(self.state_dir)):
            log.error(
                "no candle-state snapshot at or before committed batch %d in %s: the running candles restart "
                "empty (kline updates rebuild them; daily rows of the open days lack their earlier minutes)",
                last_committed,
                self.state_dir,
            )
        self._after = None

    def _state_before(self, batch_id: int) -> _State:
        if self._after is not None and self._after == batch_id - 1:
            return self._state
        earlier = [i for i in snapshot_ids(self.state_dir) if i < batch_id]
        if not earlier:
            return _State({}, {})
        return _State.from_json(self._snapshot(earlier[-1]).read_text())

    def fold(
        self, batch_id: int, events: pl.DataFrame, reset_tag: str | None = None
    ) -> tuple[pl.DataFrame, list[ClosedGap]]:
        """Output rows of one micro-batch (``batch_writer.OUTPUT_SCHEMA``) and the missed stretches it closed;
        call :meth:`commit` once they are written.

        ``reset_tag`` marks a batch that follows data loss in Kafka: every symbol's stretch opens at the newest
        event time it had, with an id made from the tag (the same on a replay, so it is recorded once).
        """
        state = self._state_before(batch_id)
        self._after = None  # until committed; a batch that fails midway makes the next one reload its snapshot
        books, gaps = state.books, dict(state.gaps)
        if reset_tag is not None:
            for symbol, book in sorted(books.items()):
                if book.max_event_ms >= 0 and symbol not in gaps:
                    gaps[symbol] = Gap(f"{reset_tag}-{symbol}", symbol, book.max_event_ms, "kafka data lost")
        out = [bad_rows(events)]
        good = events.filter(pl.col("reason").is_null())
        closed: list[ClosedGap] = []
        for (symbol,), frame in good.group_by("symbol", maintain_order=True):
            gap = gaps.get(symbol)
            if gap is not None:
                newer = frame.filter(pl.col("event_ms") > gap.from_ms)["event_ms"]
                if newer.len():
                    closed.append(ClosedGap(gap.id, symbol, gap.from_ms, int(newer.min()), gap.reason))
                    del gaps[symbol]
            book = books.setdefault(symbol, CandleBook(symbol))
            out += fold_book(book, frame, self.delay_ms)
        self._pending = (batch_id, _State(books, gaps))
        frames = [f for f in out if f.height]
        return normalize_rows(pl.concat(frames, how="diagonal_relaxed") if frames else None), closed

    def commit(self, batch_id: int) -> None:
        assert self._pending is not None and self._pending[0] == batch_id, (self._pending, batch_id)
        state = self._pending[1]
        write_text_atomic(state.to_json(), self._snapshot(batch_id))
        for old in snapshot_ids(self.state_dir):
            if old <= batch_id - KEEP_SNAPSHOTS or old > batch_id:
                self._snapshot(old).unlink(missing_ok=True)
        self._state, self._after, self._pending = state, batch_id, None
