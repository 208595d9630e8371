"""The speed layer's output layout and its micro-batch log: the contract between the stream job that writes
micro-batches and the sensor and serving layer that read them.

Layout under the lake::

    speed/candles_1m/batch=<000000000042>/part-0.parquet   1-minute candles touched by batch 42
    speed/daily/batch=<000000000042>/part-0.parquet        running daily OHLCV touched by batch 42
    speed/_log/<YYYY-MM-DD>.jsonl                          one JSON line per committed batch (UTC day of commit)

A batch's files are written atomically before its log line is appended, so a logged batch is always
complete. A batch replayed after a crash rewrites the same files and its line is appended once: readers
keep the first line per batch id. Every batch the stream job runs is logged, also one with no rows (its
files are then empty), so the offset ranges of a partition's logged batches follow each other; they start
again lower only after Kafka lost data (logged by the stream job, with a missed stretch recorded) or for a
reset checkpoint, whose batch ids carry on after the newest logged one. Compaction removes batch directories and whole log days that the batch
layer has superseded, so storage stays bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import append_line
from crypto_assets.schema import DAILY_SCHEMA, MINUTE_SCHEMA

SPEED = "speed"
CANDLES_1M = "candles_1m"
DAILY = "daily"
LOG_DIR = "_log"

# 1-minute candles as the stream last saw them in the batch (the batch layer's minute columns, then the
# stream's own); a later batch's row for the same minute wins.
SPEED_CANDLE_SCHEMA = pl.Schema(
    {
        **MINUTE_SCHEMA,
        "is_closed": pl.Boolean,  # the exchange said the minute is final (kline "x")
        "event_time": pl.Datetime("us", "UTC"),  # newest exchange event time folded into the row
        "batch_id": pl.Int64,
    }
)

# Running daily OHLCV per symbol and UTC day as of the batch: the batch layer's daily columns, then the stream's.
SPEED_DAILY_SCHEMA = pl.Schema({**DAILY_SCHEMA, "event_time": pl.Datetime("us", "UTC"), "batch_id": pl.Int64})


@dataclass(frozen=True)
class BatchRecord:
    batch_id: int
    committed_at: str  # ISO-8601 UTC
    offsets: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # topic -> partition -> [start, end)
    rows: dict[str, int] = field(default_factory=dict)  # dataset -> rows written
    min_event_time: str | None = None
    max_event_time: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def speed_root(lake: Path) -> Path:
    return lake / SPEED


def batch_dir(lake: Path, dataset: str, batch_id: int) -> Path:
    if dataset not in (CANDLES_1M, DAILY):
        raise ValueError(f"unknown speed dataset {dataset!r}")
    if batch_id < 0:
        raise ValueError(f"batch id must be >= 0, got {batch_id}")
    return speed_root(lake) / dataset / f"batch={batch_id:012d}"


def batch_file(lake: Path, dataset: str, batch_id: int) -> Path:
    return batch_dir(lake, dataset, batch_id) / "part-0.parquet"


def batch_id_of(path: Path) -> int:
    """The batch id of a ``batch=<N>`` directory or a file inside one."""
    for part in (path, *path.parents):
        if part.name.startswith("batch="):
            return int(part.name.removeprefix("batch="))
    raise ValueError(f"{path} is not inside a batch=<N> directory")


def log_dir(lake: Path) -> Path:
    return speed_root(lake) / LOG_DIR


def append_record(lake: Path, record: BatchRecord, now: datetime | None = None) -> Path:
    """Append one line to today's log file; the write is a single O_APPEND write followed by fsync."""
    day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    path = log_dir(lake) / f"{day}.jsonl"
    append_line(path, record.to_json())
    return path


def _lines(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        for raw in handle:
            if raw.endswith(b"\n"):  # a line cut short by a crash is not a commit
                yield raw.decode()


def read_records(lake: Path, after_batch_id: int | None = None) -> list[BatchRecord]:
    """Logged batches with an id above ``after_batch_id``, oldest first, one per batch id (the first line).

    Log days are read newest first and reading stops at a day whose batches are all at or below the cursor,
    so a sensor tick reads only the recent days.
    """
    directory = log_dir(lake)
    if not directory.is_dir():
        return []
    found: dict[int, BatchRecord] = {}
    for path in sorted(directory.glob("*.jsonl"), reverse=True):
        ids_in_day = []
        for line in _lines(path):
            data = json.loads(line)
            record = BatchRecord(**data)
            ids_in_day.append(record.batch_id)
            if after_batch_id is None or record.batch_id > after_batch_id:
                found.setdefault(record.batch_id, record)
        if after_batch_id is not None and ids_in_day and max(ids_in_day) <= after_batch_id:
            break
    return [found[i] for i in sorted(found)]


def latest_batch_id(lake: Path) -> int | None:
    records = read_records_tail(lake)
    return records[-1].batch_id if records else None


def read_records_tail(lake: Path) -> list[BatchRecord]:
    """The records of the newest log day only (cheap; for status displays and cursors)."""
    directory = log_dir(lake)
    days = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    if not days:
        return []
    found: dict[int, BatchRecord] = {}
    for line in _lines(days[-1]):
        record = BatchRecord(**json.loads(line))
        found.setdefault(record.batch_id, record)
    return [found[i] for i in sorted(found)]
