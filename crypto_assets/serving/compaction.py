"""Keep the speed layer's storage bounded: fold committed micro-batches into one compacted file per dataset,
drop rows the batch view has closed, and expire whole log days whose data it has closed.

The newest logged batch is left as it is (the stream may still replay it after a crash), the newest log day
is kept (it carries the latest batch id), and nothing after a symbol's seam is dropped, so the unified view
always finds what it needs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import write_parquet_atomic
from crypto_assets.lake.microbatch_log import (
    CANDLES_1M,
    DAILY,
    BatchRecord,
    latest_batch_id,
    log_dir,
)
from crypto_assets.serving.speed_store import (
    PART,
    batch_dirs,
    compacted_file,
    scan_files,
    speed_lock,
)
from crypto_assets.serving.unified import CANDLE_KEY, DAILY_KEY, latest_per_key

KEYS = {CANDLES_1M: (CANDLE_KEY, pl.col("open_time").dt.date()), DAILY: (DAILY_KEY, pl.col("date"))}


@dataclass
class CompactionResult:
    through_batch_id: int | None = None
    batches_compacted: int = 0
    rows_kept: dict[str, int] = field(default_factory=dict)
    rows_expired: dict[str, int] = field(default_factory=dict)
    log_days_removed: list[str] = field(default_factory=list)
    bytes_reclaimed: int = 0  # batch directories and log days removed
    compacted_bytes: int = 0  # the compacted files afterwards


def superseded(seams: dict[str, date | None], day: pl.Expr) -> pl.Expr:
    """Rows of a day the symbol's batch view has closed."""
    expr = pl.lit(False)
    for symbol, seam in seams.items():
        if seam is not None:
            expr = expr | ((pl.col("symbol") == symbol) & (day <= seam))
    return expr


def compact_rows(frame: pl.LazyFrame, dataset: str, seams: dict[str, date | None]) -> pl.LazyFrame:
    """The newest version of every key the batch view has not closed yet."""
    key, day = KEYS[dataset]
    return latest_per_key(frame, key).filter(~superseded(seams, day)).sort(key)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def log_records(path: Path) -> list[BatchRecord] | None:
    """The records of one log day, or None when a line cannot be read (then the day is kept)."""
    try:
        return [BatchRecord(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    except (ValueError, TypeError):
        return None


def expirable_log_days(lake: Path, seams: dict[str, date | None], through: int | None) -> list[Path]:
    """Log days (never the newest) whose batches are compacted and whose events all fall on closed days."""
    if through is None or not seams or any(s is None for s in seams.values()):
        return []
    closed = min(seams.values())
    days = sorted(log_dir(lake).glob("*.jsonl")) if log_dir(lake).is_dir() else []
    expirable = []
    for path in days[:-1]:
        records = log_records(path)
        if records is None:
            continue
        if all(
            r.batch_id <= through
            and (r.max_event_time is None or datetime.fromisoformat(r.max_event_time).date() <= closed)
            for r in records
        ):
            expirable.append(path)
    return expirable


def reclaimable_batches(lake: Path, dataset: str, through: int | None) -> list[tuple[int, Path]]:
    return [] if through is None else [(i, p) for i, p in batch_dirs(lake, dataset) if i <= through]


def compaction_bound(lake: Path) -> int | None:
    """Batches up to this id can be compacted: all logged ones except the newest."""
    latest = latest_batch_id(lake)
    return None if latest is None or latest == 0 else latest - 1


def compact_speed(lake: Path, seams: dict[str, date | None]) -> CompactionResult:
    """Compact and expire under the exclusive lock; idempotent, and a crash midway loses nothing (the
    compacted file is written before any directory it absorbed is removed)."""
    result = CompactionResult()
    with speed_lock(lake, exclusive=True):
        through = compaction_bound(lake)
        result.through_batch_id = through
        for dataset in KEYS:
            target = compacted_file(lake, dataset)
            absorbed = reclaimable_batches(lake, dataset, through)
            inputs = ([target] if target.is_file() else []) + [p / PART for _, p in absorbed if (p / PART).is_file()]
            if not inputs:
                continue
            everything = scan_files(inputs, dataset).collect()
            kept = compact_rows(everything.lazy(), dataset, seams).collect()
            result.rows_kept[dataset] = kept.height
            result.rows_expired[dataset] = everything.height - kept.height
            if kept.height == 0:
                target.unlink(missing_ok=True)
            elif absorbed or kept.height != everything.height:
                write_parquet_atomic(kept, target)
            reclaimed = sum(size_of(p) for _, p in absorbed)
            for _, path in absorbed:
                shutil.rmtree(path, ignore_errors=True)
            result.batches_compacted = max(result.batches_compacted, len(absorbed))
            result.bytes_reclaimed += reclaimed
        result.compacted_bytes = sum(size_of(compacted_file(lake, d)) for d in KEYS)
        for path in expirable_log_days(lake, seams, through):
            result.bytes_reclaimed += size_of(path)
            path.unlink(missing_ok=True)
            result.log_days_removed.append(path.stem)
    return result
