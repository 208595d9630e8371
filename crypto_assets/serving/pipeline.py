"""The unified view's one I/O step: read both layers, compact the speed layer, unify, write atomically.

The Dagster asset, the CLI and the benchmark call :func:`build_unified_view`, so the logic exists once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import write_parquet_atomic
from crypto_assets.lake.microbatch_log import CANDLES_1M, latest_batch_id
from crypto_assets.serving.compaction import CompactionResult, compact_speed
from crypto_assets.serving.speed_store import read_speed
from crypto_assets.serving.store import read_batch_minutes, read_batch_view, view_file
from crypto_assets.serving.unified import (
    after,
    running_days,
    running_minutes,
    seam_of,
    unify,
)
from crypto_assets.validation import validate_symbol


@dataclass
class UnifiedResult:
    frame: pl.DataFrame  # the unified view as written
    batch_view: pl.DataFrame  # daily_filled with as_of, for the checks
    seam: date | None
    speed_minutes: int  # speed-layer minutes after the seam that fed the view
    speed_batch_id: int | None  # newest logged micro-batch when the view was built
    compaction: CompactionResult
    path: Path
    bytes_written: int


def batch_seams(lake: Path, symbols: Sequence[str]) -> dict[str, date | None]:
    return {symbol: seam_of(read_batch_view(lake, symbol)) for symbol in symbols}


def build_unified_view(
    lake: Path, symbol: str, symbols: Sequence[str], watermark_delay: timedelta = timedelta(0)
) -> UnifiedResult:
    """``watermark_delay`` is the stream job's ``stream.watermark`` (see :func:`running_minutes`)."""
    validate_symbol(symbol)
    compaction = compact_speed(lake, batch_seams(lake, symbols))
    # The seam is read again after compaction, from the very rows the view is built on.
    batch_view = read_batch_view(lake, symbol).collect()
    seam = seam_of(batch_view.lazy())
    speed_batch_id = latest_batch_id(lake)
    speed = read_speed(lake, CANDLES_1M, (pl.col("symbol") == symbol) & after(seam, pl.col("open_time").dt.date()))
    minutes = running_minutes(speed.lazy(), read_batch_minutes(lake, symbol, seam), seam, watermark_delay)
    frame = unify(batch_view.lazy(), running_days(minutes), seam).collect()
    path = view_file(lake, symbol)
    size = write_parquet_atomic(frame, path)
    return UnifiedResult(frame, batch_view, seam, speed.height, speed_batch_id, compaction, path, size)
