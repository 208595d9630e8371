"""Writes one micro-batch of the stream job per the speed-layer contract (:mod:`streaming_sensor.microbatch_log`).

Files first (atomically, fixed row order so a replayed batch rewrites byte-identical files), then one log
line. A batch id that is already in the log is a replay after a crash: its files are rewritten and no second
line is appended.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import write_parquet_atomic, write_text_atomic
from streaming_sensor.microbatch_log import (
    CANDLES_1M,
    DAILY,
    SPEED_CANDLE_SCHEMA,
    SPEED_DAILY_SCHEMA,
    BatchRecord,
    append_record,
    batch_file,
    latest_batch_id,
    speed_root,
)

log = logging.getLogger(__name__)

# Rows of the stream's stateful step: candles, daily rows, late-event counts and bad messages in one table.
OUTPUT_DDL = (
    "kind string, symbol string, open_time timestamp, date date, open double, high double, low double, "
    "close double, volume double, is_closed boolean, minute_count int, event_time timestamp, dropped bigint, "
    "topic string, partition int, offset bigint, reason string"
)
CANDLE, DAILY_ROW, LATE, BAD = "candle", "daily", "late", "bad"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def speed_candles(rows: pl.DataFrame, batch_id: int) -> pl.DataFrame:
    return (
        rows.filter(pl.col("kind") == CANDLE)
        .with_columns(pl.lit(batch_id, pl.Int64).alias("batch_id"))
        .select(SPEED_CANDLE_SCHEMA.names())
        .cast(dict(SPEED_CANDLE_SCHEMA))
        .sort("symbol", "open_time")
    )


def speed_daily(rows: pl.DataFrame, batch_id: int) -> pl.DataFrame:
    return (
        rows.filter(pl.col("kind") == DAILY_ROW)
        .with_columns(pl.lit(batch_id, pl.Int64).alias("batch_id"))
        .select(SPEED_DAILY_SCHEMA.names())
        .cast(dict(SPEED_DAILY_SCHEMA))
        .sort("symbol", "date")
    )


def quarantine_path(speed_dir: Path, batch_id: int) -> Path:
    return speed_dir / "quarantine" / f"batch={batch_id:012d}.jsonl"


@dataclass
class BatchWriter:
    lake: Path
    speed_dir: Path
    last_logged: int | None = None
    _loaded: bool = False

    def _last_logged(self) -> int | None:
        if not self._loaded:  # read once; afterwards this process is the only writer of the log
            self.last_logged = latest_batch_id(self.lake)
            self._loaded = True
        return self.last_logged

    def write(self, rows: pl.DataFrame, batch_id: int, offsets: dict, now: datetime | None = None) -> BatchRecord | None:
        """Write one batch; returns its log record, or None when the batch had nothing to write."""
        bad = rows.filter(pl.col("kind") == BAD).sort("topic", "partition", "offset")
        if bad.height:
            lines = (
                json.dumps({"topic": r["topic"], "partition": r["partition"], "offset": r["offset"], "reason": r["reason"]})
                for r in bad.iter_rows(named=True)
            )
            write_text_atomic("\n".join(lines) + "\n", quarantine_path(self.speed_dir, batch_id))
            first = bad.row(0, named=True)
            log.warning(
                "batch %d: %d bad message(s) quarantined in %s; first: %s[%s]@%s: %s",
                batch_id, bad.height, quarantine_path(self.speed_dir, batch_id),
                first["topic"], first["partition"], first["offset"], first["reason"],
            )  # fmt: skip
        late = rows.filter(pl.col("kind") == LATE)["dropped"].sum()
        if late:
            log.info("batch %d: dropped %d event(s) older than the watermark", batch_id, late)

        candles = speed_candles(rows, batch_id)
        daily = speed_daily(rows, batch_id)
        if candles.height == 0 and daily.height == 0:
            return None
        for dataset, frame in ((CANDLES_1M, candles), (DAILY, daily)):
            write_parquet_atomic(frame, batch_file(self.lake, dataset, batch_id))
        times = pl.concat([candles.select("event_time"), daily.select("event_time")])["event_time"]
        record = BatchRecord(
            batch_id=batch_id,
            committed_at=(now or datetime.now(UTC)).isoformat(),
            offsets=offsets,
            rows={CANDLES_1M: candles.height, DAILY: daily.height},
            min_event_time=_iso(times.min()),
            max_event_time=_iso(times.max()),
        )
        last = self._last_logged()
        if last is not None and batch_id <= last:
            log.info("batch %d was already logged (replay after a restart): files rewritten, log unchanged", batch_id)
            return record
        append_record(self.lake, record, now)
        self.last_logged = batch_id
        return record


def speed_output_exists(lake: Path) -> bool:
    return speed_root(lake).is_dir()
