"""Writes one micro-batch of the stream job per the speed-layer contract (:mod:`crypto_assets.lake.microbatch_log`).

Files first (atomically, fixed row order so a replayed batch rewrites byte-identical files), then one log
line. Every batch is logged, also one that wrote no rows (all its events late, bad or superseded), so the
logged offset ranges of a partition follow each other with no gap. The newest logged batch id coming again
with the same offsets is a replay after a crash: its files are rewritten and no second line is appended. Any
other batch id at or below the newest logged one means the log and Spark's checkpoint disagree (the log was
written by another checkpoint), and the batch fails rather than mix the two.

A batch's bad messages go to ``<speed_dir>/quarantine/batch=<id>.jsonl``; writing one removes those older
than :data:`QUARANTINE_KEEP` and all but the newest :data:`QUARANTINE_MAX_FILES`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import write_parquet_atomic, write_text_atomic
from crypto_assets.lake.microbatch_log import (
    CANDLES_1M,
    DAILY,
    SPEED_CANDLE_SCHEMA,
    SPEED_DAILY_SCHEMA,
    BatchRecord,
    append_record,
    batch_file,
    read_records_tail,
)
from crypto_assets.schema import MINUTE_SCHEMA, OHLCV

log = logging.getLogger(__name__)

# What one micro-batch produces: candles, daily rows, late-event counts and bad messages in one table.
OUTPUT_SCHEMA = pl.Schema(
    {
        "kind": pl.String,
        "symbol": pl.String,
        "open_time": pl.Datetime("us", "UTC"),
        "date": pl.Date,
        **{name: MINUTE_SCHEMA[name] for name in OHLCV},
        "is_closed": pl.Boolean,
        "minute_count": pl.UInt32,
        "event_time": pl.Datetime("us", "UTC"),
        "dropped": pl.Int64,
        "topic": pl.String,
        "partition": pl.Int32,
        "offset": pl.Int64,
        "reason": pl.String,
    }
)
CANDLE, DAILY_ROW, LATE, BAD = "candle", "daily", "late", "bad"


def normalize_rows(rows: pl.DataFrame | None) -> pl.DataFrame:
    """Any subset of the output columns -> exactly :data:`OUTPUT_SCHEMA` (missing columns null)."""
    if rows is None:
        return pl.DataFrame(schema=OUTPUT_SCHEMA)
    return rows.select(
        pl.col(name).cast(kind) if name in rows.columns else pl.lit(None, kind).alias(name)
        for name, kind in OUTPUT_SCHEMA.items()
    )


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


# Bad messages are kept to be looked at, not reprocessed: a week of them, and never more than this many files.
QUARANTINE_KEEP = timedelta(days=7)
QUARANTINE_MAX_FILES = 1000


def quarantine_path(speed_dir: Path, batch_id: int) -> Path:
    return speed_dir / "quarantine" / f"batch={batch_id:012d}.jsonl"


def expire_quarantine(
    speed_dir: Path, now: float, keep: timedelta = QUARANTINE_KEEP, max_files: int = QUARANTINE_MAX_FILES
) -> list[Path]:
    """Remove quarantine files older than ``keep`` (by when they were written) and all but the newest
    ``max_files`` batches' files; returns the removed files."""
    folder = quarantine_path(speed_dir, 0).parent
    files = sorted(folder.glob("batch=*.jsonl")) if folder.is_dir() else []  # zero-padded ids: oldest batch first
    stale = files[: max(0, len(files) - max_files)]
    stale += [p for p in files[len(stale) :] if now - p.stat().st_mtime > keep.total_seconds()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class LogMismatch(RuntimeError):
    """The micro-batch log already holds this batch id for other offsets: it belongs to another checkpoint."""


@dataclass
class BatchWriter:
    lake: Path
    speed_dir: Path
    last_logged: BatchRecord | None = None
    _loaded: bool = False

    def _last_logged(self) -> BatchRecord | None:
        if not self._loaded:  # read once; afterwards this process is the only writer of the log
            tail = read_records_tail(self.lake)
            self.last_logged = tail[-1] if tail else None
            self._loaded = True
        return self.last_logged

    def _expire_quarantine(self) -> None:
        """Old quarantine files go as a new one comes; a failure (a full disk) must not fail the batch."""
        try:
            removed = expire_quarantine(self.speed_dir, time.time())
        except OSError as exc:
            log.warning("could not expire old quarantine files: %s", exc)
            return
        if removed:
            log.info(
                "removed %d quarantine file(s) older than %s or beyond the newest %d",
                len(removed),
                QUARANTINE_KEEP,
                QUARANTINE_MAX_FILES,
            )

    def write(self, rows: pl.DataFrame, batch_id: int, offsets: dict, now: datetime | None = None) -> BatchRecord:
        """Write one batch's files and log line; returns its log record."""
        rows = normalize_rows(rows)
        bad = rows.filter(pl.col("kind") == BAD).sort("topic", "partition", "offset")
        if bad.height:
            lines = (
                json.dumps(
                    {"topic": r["topic"], "partition": r["partition"], "offset": r["offset"], "reason": r["reason"]}
                )
                for r in bad.iter_rows(named=True)
            )
            write_text_atomic("\n".join(lines) + "\n", quarantine_path(self.speed_dir, batch_id))
            first = bad.row(0, named=True)
            log.warning(
                "batch %d: %d bad message(s) quarantined in %s; first: %s[%s]@%s: %s",
                batch_id,
                bad.height,
                quarantine_path(self.speed_dir, batch_id),
                first["topic"],
                first["partition"],
                first["offset"],
                first["reason"],
            )
            self._expire_quarantine()
        late = rows.filter(pl.col("kind") == LATE)["dropped"].sum()
        if late:
            log.info("batch %d: dropped %d event(s) older than the watermark", batch_id, late)

        last = self._last_logged()
        if last is not None and (batch_id < last.batch_id or (batch_id == last.batch_id and last.offsets != offsets)):
            raise LogMismatch(
                f"batch {batch_id} with offsets {offsets}: the micro-batch log under {self.lake} already holds "
                f"batch {last.batch_id} with offsets {last.offsets}; it was written by another checkpoint"
            )
        candles = speed_candles(rows, batch_id)
        daily = speed_daily(rows, batch_id)
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
        if last is not None and batch_id == last.batch_id:
            log.info("batch %d was already logged (replay after a restart): files rewritten, log unchanged", batch_id)
            return last
        append_record(self.lake, record, now)
        self.last_logged = record
        return record
